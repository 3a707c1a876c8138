"""sevi.evaluation.calibration: z-score summaries against hand-computed values."""
import numpy as np
import pytest

from sevi.evaluation.calibration import centre_fit_summary, z_calibration


def test_z_calibration_counts_within_one_and_1_96():
    out = z_calibration([0.5, -1.5, 2.0, 0.0])
    assert out["n"] == 4 and out["within_68"] == 0.5 and out["within_95"] == 0.75
    assert out["z_std"] == pytest.approx(np.std([0.5, -1.5, 2.0, 0.0]))
    with pytest.raises(ValueError):
        z_calibration([np.nan])


def test_centre_fit_summary_by_hand():
    out = centre_fit_summary([[3.0, 0.0], [-1.0, 2.0]], [0.02, 0.03], [0.02, 0.02])
    assert out["n"] == 2 and out["z_max"] == 3.0
    assert out["z_rms_x"] == pytest.approx(np.sqrt(5)) and out["z_rms_z"] == pytest.approx(np.sqrt(2))
    assert out["z_rms"] == pytest.approx(np.sqrt(14 / 4))
    assert out["distance_ratio_of_means"] == pytest.approx(1.25)
    assert (out["distance_ratio_min"], out["distance_ratio_max"]) == pytest.approx((1.0, 1.5))
