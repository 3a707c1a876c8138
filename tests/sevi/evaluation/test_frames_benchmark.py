"""sevi.evaluation.frames_benchmark.summarise: the figures the frames-to-the-limit table is made of."""
import numpy as np
import pytest

from sevi.evaluation.frames_benchmark import summarise


def _row(kind, direct, oracle, chi2, z, separation=0.2):
    return {"kind": kind, "direct": direct, "oracle": oracle, "floor_bayes": oracle, "regressor": 0.1,
            "separation": separation,
            "direct_chi2_dof": chi2, "direct_converged": True, "landed": chi2 < 1.5,
            "z_beta": np.full((2, 12), z).tolist(), "z_R": [z, -z], "z_sigma_R": [z, z]}


def test_ratios_flags_and_the_calibration_without_named_misfits():
    rows = [_row("prior", 0.010, 0.010, 1.0, 1.0), _row("crowded", 0.012, 0.010, 0.9, -1.0),
            _row("overlapping", 0.030, 0.010, 2.4, 40.0)]
    s = summarise(rows)
    assert s["all"]["n"] == 3 and s["all"]["flagged"] == 1
    assert s["all"]["ratio_of_medians"] == pytest.approx(0.012 / 0.010)
    assert s["all"]["worst_ratio"] == pytest.approx(3.0)
    assert s["all"]["landed"] == pytest.approx(2 / 3)
    assert s["calibration"]["beta_2..6"]["z_std"] > 10  # the misfit's z-scores dominate
    unflagged = s["calibration_unflagged"]
    assert unflagged["beta_2..6"]["n"] == 12 and unflagged["beta_2..6"]["z_std"] == pytest.approx(1.0)
    assert unflagged["R"]["within_68"] == 1.0 and unflagged["R"]["n"] == 4


def test_the_resolved_group_leaves_out_shells_closer_than_a_camera_spot():
    rows = [_row("prior", 0.010, 0.010, 1.0, 1.0), _row("overlapping", 0.02, 0.01, 1.0, 8.0, separation=0.004),
            _row("overlapping", 0.02, 0.01, 1.0, -1.0, separation=0.016)]
    s = summarise(rows)
    assert s["calibration_unflagged"]["beta_2..6"]["z_std"] > 3  # the unresolved pair's z-scores
    resolved = s["calibration_unflagged_resolved"]
    assert resolved["beta_2..6"]["n"] == 12 and resolved["beta_2..6"]["z_std"] == pytest.approx(1.0)
