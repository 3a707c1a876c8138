"""sevi.evaluation.centred_frames: the summary's figures; a measurement without its cached frame sum
is refused before anything is rendered (rendering 50,000 frames takes many minutes)."""
import numpy as np
import pytest

from sevi.evaluation.centred_frames import evaluate_centred_frames, summarise_centred_frames
from sevi.evaluation.frames_benchmark import draw_measurements


def test_the_summary():
    rows = [{"centre_z": [1.0, -1.0], "centre_sd": [0.1, 0.2], "d_centred": 0.011, "d_known": 0.010, "wall_s": 60.0,
             "converged": True},
            {"centre_z": [0.0, 2.0], "centre_sd": [0.3, 0.1], "d_centred": 0.020, "d_known": 0.020, "wall_s": 80.0,
             "converged": True}]
    s = summarise_centred_frames(rows)
    assert s["z_rms"] == pytest.approx(np.sqrt(6 / 4)) and s["z_rms_x"] == pytest.approx(np.sqrt(0.5))
    assert s["distance_ratio_of_means"] == pytest.approx(0.031 / 0.030) and s["distance_ratio_max"] == pytest.approx(1.1)
    assert s["wall_s_median"] == 70.0 and s["all_converged"]


def test_a_measurement_without_its_frame_sum_is_refused(tmp_path):
    m = draw_measurements(1, (50000, 50000))[0]
    with pytest.raises(ValueError, match="no cached frame sum"):
        evaluate_centred_frames([{"separation": 0.1, "direct": 0.01}], [m], tmp_path, None, None, "cpu", 5,
                                progress=False)
