"""`sevi analyze`: frames -> events -> accumulated image -> model -> Answer, end to end on CPU."""


import h5py
import pytest
import torch

from sevi.cli.main import main
from sevi.io import tables as io


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from sevi.regressor.batches import make_batch, make_generator
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import PRESETS
    from sevi.regressor.training import LoopContext, train_loop

    torch.set_num_threads(1)
    cfg = PRESETS["tiny"].replace(steps=4, eval_every=4, checkpoint_every=4)
    gen = make_generator(cfg.data, "cpu")
    d = tmp_path_factory.mktemp("model")
    res = train_loop(cfg, lambda step: make_batch(gen, cfg.data, step), LoopContext(out_dir=str(d)))
    return save_final_model(res["model"], cfg, d / "final"), cfg


def test_frames_to_answer(tiny_model, tmp_path):
    model, cfg = tiny_model
    frames = tmp_path / "frames.h5"
    assert main(["simulate-frames", str(frames), "--frames", "40", "--hits", "shells", "--seed", "1"]) == 0
    out = tmp_path / "answer.h5"
    assert main(["analyze", str(frames), "--model", model, "--out", str(out), "--no-ray", "--chunk", "16",
                 "--device", "cpu", "--path", "events"]) == 0
    answer = io.read_answer(out)
    assert answer.dtype == io.answer_dtype(cfg.data.n_terms) and len(answer) == 2
    assert answer["R"][0] <= answer["R"][1]
    with h5py.File(out) as f:
        unc = f["AnswerUncertainty"][()]
    assert (unc["beta"] > 0).all() and (unc["R"] > 0).all(), "every parameter gets an error bar"
    assert (tmp_path / "answer.events.h5").exists(), "the events file stays beside the answer"


def test_model_trained_for_other_counts_is_refused(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    frames = tmp_path / "frames.h5"
    main(["simulate-frames", str(frames), "--frames", "2", "--hits", "shells", "--seed", "1"])
    assert main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a.h5"), "--no-ray",
                 "--device", "cpu", "--path", "events"]) == 2
    assert "electrons; this model was trained on" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists()



def test_the_default_path_is_direct_and_an_events_model_is_named(tiny_model, tmp_path, capsys):
    """--path auto is the direct path; a model trained on count images is refused for it in one line
    that names the way out, before any frame is read."""
    model, _ = tiny_model
    frames = tmp_path / "frames.h5"
    main(["simulate-frames", str(frames), "--frames", "2", "--hits", "shells", "--seed", "1"])
    assert main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a.h5"), "--no-ray",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--path auto (the direct path) needs a model trained for frame sums" in err and "--path events" in err
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "a.events.h5").exists()


def test_centre_fit_needs_the_refinement(tiny_model, tmp_path, capsys):
    """--centre fit --no-refine is refused in one line, before any frame is read; nothing is written."""
    model, _ = tiny_model
    frames = tmp_path / "frames.h5"
    main(["simulate-frames", str(frames), "--frames", "2", "--hits", "shells", "--seed", "1"])
    capsys.readouterr()
    assert main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a.h5"), "--no-ray",
                 "--device", "cpu", "--path", "events", "--centre", "fit", "--no-refine"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sevi analyze: --centre fit needs the refinement") and len(err) == 1
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "a.events.h5").exists()


def test_the_estimator_option_reaches_the_direct_path(tiny_model, tmp_path, monkeypatch):
    """--estimator is handed to the frames pipeline as given, and defaults to the package's default
    (what each estimator answers: tests/sevi/fit/test_frame_sum_information.py)."""
    from sevi.pipeline import frames_answer
    from sevi.fit.estimators import DEFAULT_ESTIMATOR, ESTIMATORS

    seen = []

    class Stop(Exception):
        pass

    def fake(*args, **kwargs):
        seen.append(kwargs["estimator"])
        raise Stop

    monkeypatch.setattr(frames_answer, "answer_frames", fake)
    model, _ = tiny_model
    frames = tmp_path / "frames.h5"
    main(["simulate-frames", str(frames), "--frames", "2", "--hits", "shells", "--seed", "1"])
    for extra in ([], ["--estimator", "wls"], ["--estimator", "gls"]):
        with pytest.raises(Stop):
            main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a.h5"), "--device", "cpu",
                  "--debug", *extra])
    assert seen == [DEFAULT_ESTIMATOR, "wls", "gls"] and set(ESTIMATORS) == {"wls", "gls"}
