"""How sure a recommendation is: the next run's dE00 interval (its quantiles, its coverage of
draws the model itself would make, its collapse without uncertainty) and the care flags."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from coating.line import history_rows, plant, schema
from coating.models import fitting
from coating.optics.colour import ciede2000
from coating.recommend import optimise_settings
from coating.recommend.uncertainty import (
    Gain,
    Interval,
    care_flags,
    interval_draws,
    predict_interval,
)


@pytest.fixture(scope="module")
def grey(operator_runs):
    _, _, runs, std = operator_runs(51, 52, 14, plant.PlantParams())
    hist = schema.history_from_measurements(runs)
    tr, va = history_rows.time_split(hist, 1)
    model = fitting.fit("greybox", {"epochs": 2, "inner_steps": 6, "width": 0}, tr, va).model
    return model, hist, optimise_settings.Standard.from_curves(std[0], std[1])


def test_the_interval_covers_90_percent_of_the_models_own_next_runs(grey):
    """Independent draws (another seed, drawn here by hand: settings scaled by the tooling step,
    the run's errors through predict_draws) of what the model says the next run can be fall
    inside its 90 % interval 90 % of the time, per side."""
    model, hist, std = grey
    x = hist.settings[-1]
    iv = predict_interval(model, x, 15, std, tooling_scale=2.0, draws=512, seed=3)
    n = 4000
    z, u, _ = model.noise_draws(n, seed=11)
    step = torch.randn(n, 1, generator=torch.Generator().manual_seed(12), dtype=torch.float64) \
        * 2.0 * model.hparams["walk_sd"]
    with torch.no_grad():
        xs = torch.as_tensor(x)[None] * torch.exp(step)                       # (n, 10)
        lab = torch.stack([model.predict_draws(xs[i:i + 1], z[i:i + 1], u[i:i + 1],
                                               run_in_cycle=torch.tensor([15.0], dtype=torch.float64)).lab[0, 0]
                           for i in range(0, n, 10)])                           # every 10th: 400 truths
    de = ciede2000(lab, std.lab).numpy()                                        # (400, 2)
    cover = ((de >= iv.lo) & (de <= iv.hi)).mean(0)
    assert np.all(np.abs(cover - 0.9) < 0.05), cover
    assert np.all(iv.lo <= iv.median) and np.all(iv.median <= iv.hi)


def test_without_uncertainty_the_interval_is_the_nominal_prediction(grey):
    model, hist, std = grey
    quiet = copy.deepcopy(model)
    quiet.hparams["run_scale_sd"] = 0.0
    quiet.z_sd.zero_()
    x = hist.settings[-1]
    iv = predict_interval(quiet, x, 15, std, tooling_scale=0.0, draws=16)
    nominal = optimise_settings.predicted_delta_e(quiet, x, 15, std)
    assert np.allclose(iv.lo, nominal, atol=1e-9) and np.allclose(iv.hi, nominal, atol=1e-9)
    # The same without touching the model: no tooling step and the run's own errors scaled to 0.
    iv0 = predict_interval(model, x, 15, std, tooling_scale=0.0, draws=16, noise_scale=0.0)
    assert np.allclose(iv0.hi, optimise_settings.predicted_delta_e(model, x, 15, std), atol=1e-9)
    (a0,) = predict_interval(model, x, 15, std, [(0.0, 0.0, 0.0)], draws=16)
    assert np.allclose(a0.lo, iv0.lo)
    # More tooling uncertainty, a wider interval; a list of scales shares the draws.
    a, b = predict_interval(model, x, 15, std, tooling_scale=[1.0, 4.0], draws=128)
    assert np.all(b.width() > a.width())
    one = predict_interval(model, x, 15, std, tooling_scale=4.0, draws=128)
    assert np.array_equal(one.hi, b.hi)


def test_draws_are_antithetic_and_scaled_by_the_models_walk(grey):
    model, _, _ = grey
    z, u, dlog = interval_draws(model, 2000, 3.0, seed=5)
    assert torch.equal(dlog[1000:], -dlog[:1000]) and torch.equal(dlog[:, 0], dlog[:, 9])
    assert abs(float(dlog[:, 0].std()) / (3.0 * model.hparams["walk_sd"]) - 1) < 0.08
    # k runs ahead: k steps of the walk.
    _, _, d4 = interval_draws(model, 2000, 3.0, seed=5, steps=4)
    assert torch.allclose(d4, 2 * dlog)
    # A per-layer error on top: independent per layer, its own scale; pairs share the draws.
    _, _, (d0, dl) = interval_draws(model, 2000, [(3.0, 0.0), (3.0, 2.0)], seed=5)
    assert torch.equal(d0, dlog)
    per_layer = dl - dlog
    assert abs(float(per_layer.std(0).mean()) / (2.0 * model.hparams["walk_sd"]) - 1) < 0.08
    assert abs(float(torch.corrcoef(per_layer[:, :2].T)[0, 1])) < 0.1


def test_model1_has_no_interval(grey):
    model, hist, std = grey
    m1 = fitting.fit("model1", {"epochs": 2}, *history_rows.time_split(hist, 1)).model
    assert predict_interval(m1, hist.settings[-1], 15, std, 1.0) is None


def _rec(settings, de, de_cur):
    s = np.asarray(settings, float)
    return optimise_settings.Recommendation(s, s, s * 0, np.asarray(de, float), np.asarray(de_cur, float),
                                            np.zeros(2), 0.0)


def test_care_flags():
    seen = np.array([[10.0] * 10, [12.0] * 10])
    iv = Interval(np.array([0.4, 0.4]), np.array([0.2, 0.2]), np.array([0.6, 0.9]), 0.9, 100, Gain(0.5, 0.1, 0.9, 0.9, 0.01))
    assert care_flags(_rec([11.0] * 10, [0.1, 0.1], [1.0, 1.0]), iv, 30, seen, 20) == ()
    assert care_flags(_rec([11.0] * 10, [0.1, 0.1], [1.0, 1.0]), iv, 19, seen, 20) == ("few_runs",)
    # Outside the seen range by more than the setting's spread over the cycle (1.0 nm here).
    assert care_flags(_rec([11.0] * 9 + [13.01], [0.1, 0.1], [1.0, 1.0]), iv, 30, seen, 20) == ("unseen_settings",)
    assert care_flags(_rec([11.0] * 9 + [12.9], [0.1, 0.1], [1.0, 1.0]), iv, 30, seen, 20) == ()
    assert care_flags(_rec([11.0] * 10, [0.1, 0.1], [1.0, 1.0]), iv, 30, seen, 20, steps=5) == ("far_ahead",)
    assert care_flags(_rec([11.0] * 10, [0.1, 0.1], [1.0, 1.0]), iv, 30, seen, 20, steps=4) == ()
    # The gain's own interval reaching zero: flagged, whatever the next run's interval is.
    unsure = dataclasses.replace(iv, gain=Gain(0.5, 0.0, 0.9, 0.9, 0.05))
    assert care_flags(_rec([11.0] * 10, [0.1, 0.1], [1.0, 1.0]), unsure, 30, seen, 20) == ("interval_wider_than_gain",)
    wide = dataclasses.replace(iv, lo=np.array([0.0, 0.0]), hi=np.array([5.0, 5.0]))
    assert care_flags(_rec([11.0] * 10, [0.2, 0.2], [0.5, 0.5]), wide, 30, seen, 20) == ()
    assert care_flags(_rec([11.0] * 10, [0.2, 0.2], [0.5, 0.5]), None, 30, seen, 20) == ()
    assert care_flags(_rec([11.0] * 10, [0.2, 0.2], [0.5, 0.5]), dataclasses.replace(iv, gain=None), 30, seen, 20) == ()
    assert np.array_equal(iv.covers([0.3, 1.0]), [True, False])


def test_sensor_errors_drawn_from_the_cycles_runs(grey):
    model, hist, std = grey
    pool = model.z_of(torch.as_tensor(hist.std)).numpy()      # (14 runs, 14)
    z, u, _ = interval_draws(model, 300, 1.0, seed=4, z_pool=pool)
    rows = {tuple(np.round(r, 12)) for r in pool}
    assert all(tuple(np.round(r, 12)) in rows for r in z.numpy()) and len({tuple(r) for r in z.numpy()}) > 5
    a = predict_interval(model, hist.settings[-1], 15, std, 1.0, draws=128, z_pool=pool)
    b = predict_interval(model, hist.settings[-1], 15, std, 1.0, draws=128)
    assert not np.array_equal(a.lo, b.lo)


def test_the_gain_is_taken_draw_by_draw_on_common_draws(grey):
    """The gain's quantiles are those of the per-draw difference (computed here by hand from
    interval_draws and predict_draws), not the difference of two intervals; kept settings gain
    exactly 0 on every draw (and are flagged)."""
    model, hist, std = grey
    cur = hist.settings[-1]
    rec = cur * np.r_[np.full(5, 1.02), np.full(5, 0.98)]
    iv = predict_interval(model, rec, 15, std, tooling_scale=2.0, draws=256, seed=3, current=cur)
    z, u, dlog = interval_draws(model, 256, 2.0, seed=3)
    with torch.no_grad():
        p = model.predict_draws(torch.as_tensor(np.stack([rec, cur])), z, u, dlog,
                                run_in_cycle=torch.tensor([15.0, 15.0], dtype=torch.float64))
    de = ciede2000(p.lab, std.lab).numpy()                                      # (2, 256, 2)
    g = (de[1] - de[0]).sum(-1)
    assert np.allclose([iv.gain.lo, iv.gain.median, iv.gain.hi], np.quantile(g, [0.05, 0.5, 0.95]))
    assert iv.gain.p_worse == np.mean(g < 0)
    assert np.allclose(iv.hi, np.quantile(de[0], 0.95, axis=0))                # the interval itself unchanged
    assert iv.gain.hi - iv.gain.lo < (iv.hi - iv.lo).sum()                      # shared errors cancel
    same = predict_interval(model, cur, 15, std, tooling_scale=2.0, draws=64, current=cur)
    assert same.gain.lo == same.gain.median == same.gain.hi == same.gain.p_worse == 0.0
    assert "interval_wider_than_gain" in care_flags(_rec(cur, [0.1, 0.1], [0.1, 0.1]), same, 30, hist.settings, 20)
