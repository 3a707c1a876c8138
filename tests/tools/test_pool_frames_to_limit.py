"""tools/pool_frames_to_limit.py: two runs' rows pooled, a measurement in both counted once, runs of
two estimators or two kinds of error bars refused in one line."""
import json

import pytest

from tests.sevi.evaluation.test_frames_benchmark import _row
from tools import pool_frames_to_limit


def _run(folder, rows, estimator="gls", batches=None):
    folder.mkdir()
    doc = {"model": "m", "estimator": estimator, "rows": rows} | ({} if batches is None else {"batches": batches})
    (folder / "frames_to_limit.json").write_text(json.dumps(doc))


def _seeded(seed, *args, **kw):
    return _row(*args, **kw) | {"seed": seed, "frames": 3000}


def test_two_runs_pooled_each_measurement_once(tmp_path, capsys):
    _run(tmp_path / "a", [_seeded(1, "prior", 0.010, 0.010, 1.0, 1.0), _seeded(2, "crowded", 0.02, 0.01, 1.0, -1.0)])
    _run(tmp_path / "b", [_seeded(2, "crowded", 0.02, 0.01, 1.0, -1.0), _seeded(3, "overlapping", 0.03, 0.01, 1.0, 2.0)])
    rows, model, estimator = pool_frames_to_limit.pooled_rows([str(tmp_path / "a"), str(tmp_path / "b")])
    assert [r["seed"] for r in rows] == [1, 2, 3] and (model, estimator) == ("m", "gls, error bars from the model")
    assert pool_frames_to_limit.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "3 measurements from 2 runs" in out and "worst ratio 3.00" in out
    assert "calibration_unflagged R          z std" in out and "(n=6)" in out


def test_runs_of_two_estimators_are_refused(tmp_path):
    _run(tmp_path / "a", [_seeded(1, "prior", 0.010, 0.010, 1.0, 1.0)])
    _run(tmp_path / "b", [_seeded(2, "prior", 0.010, 0.010, 1.0, 1.0)], estimator="wls")
    with pytest.raises(ValueError, match="differ in model, estimator or batches"):
        pool_frames_to_limit.pooled_rows([str(tmp_path / "a"), str(tmp_path / "b")])


def test_runs_of_two_kinds_of_error_bars_are_refused(tmp_path):
    """A run from before --batches made its bars from the model: it pools with --batches 0, not 100."""
    _run(tmp_path / "a", [_seeded(1, "prior", 0.010, 0.010, 1.0, 1.0)])
    _run(tmp_path / "b", [_seeded(2, "prior", 0.010, 0.010, 1.0, 1.0)], batches=0)
    _run(tmp_path / "c", [_seeded(3, "prior", 0.010, 0.010, 1.0, 1.0)], batches=100)
    assert len(pool_frames_to_limit.pooled_rows([str(tmp_path / "a"), str(tmp_path / "b")])[0]) == 2
    with pytest.raises(ValueError, match="differ in model, estimator or batches"):
        pool_frames_to_limit.pooled_rows([str(tmp_path / "a"), str(tmp_path / "c")])
    assert pool_frames_to_limit.pooled_rows([str(tmp_path / "c")])[2] == "gls, error bars from 100 batches"
