"""The refinement prior is narrowed around first-pass predictions and stays a valid prior."""

import numpy as np

from sevi.physics.narrowed_prior import narrow_prior
from sevi.physics.prior import Prior, PriorConfig


def test_narrowed_prior_draws_inside_the_prediction_boxes():
    base = PriorConfig().with_electrons(1000)
    pred = Prior(base).mean_beta().numpy()[None, None].repeat(2, 1)  # (1, 2, L)
    sd = 0.02 * np.ones_like(pred)
    pc = narrow_prior(base, pred, sd, np.array([[0.5, 0.7]]), np.array([[0.01, 0.01]]), width=3.0)
    p = Prior(pc)(64, 0).params
    b = p.beta.numpy()
    assert (b[..., :3] >= pred[..., :3] - 0.061).all() and (b[..., :3] <= pred[..., :3] + 0.061).all()
    assert p.R.min() >= 0.47 - 1e-9 and p.R.max() <= 0.73 + 1e-9
    assert pc.electrons_range == base.electrons_range


def test_refine_answer_file_narrows_the_training_prior(tmp_path):
    from sevi.io.tables import answer_rows, write_tables
    from sevi.regressor.batches import prior_config
    from sevi.regressor.train_config import PRESETS, resolve_config

    beta = Prior(PriorConfig()).mean_beta().numpy()[None, None].repeat(2, 1)
    ans = answer_rows(np.array([[0.5, 0.7]]), beta)
    unc = ans.copy()
    unc["R"], unc["beta"] = 0.01, 0.02
    write_tables(tmp_path / "a.h5", {"Answer": ans, "AnswerUncertainty": unc})
    cfg = resolve_config("tiny", {"refine_answer": str(tmp_path / "a.h5"), "refine_width": "2"})
    pc = prior_config(cfg)
    assert np.allclose(pc.radius_range, (0.48, 0.72)) and pc.electrons_range == PRESETS["tiny"].data.electrons
    assert np.allclose(pc.beta_low[0], beta[0, 0, 0] - 0.04), "beta_2 box must be the prediction +- 2 sigma"
