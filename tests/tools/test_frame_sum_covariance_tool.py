"""tools/frame_sum_covariance.py on the course's camera, the fit's estimator alone: a few sums of one
frame each run end to end, the JSON and the PNG are written, and a rerun reuses the rendered sums."""
import json

from tools import frame_sum_covariance


def test_course_camera_without_gls_end_to_end_and_the_sums_reused(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--camera", "course", "--frames", "1", "--sums", "3", "--R", "0.45,0.75", "--no-gls",
            "--out", str(out), "--threads", "1"]
    assert frame_sum_covariance.main(argv) == 0
    doc = json.loads((out / "frame_sum_covariance.json").read_text())
    assert "gls" not in doc and doc["check"]["camera"]["grid"] == 1024 and doc["check"]["fit_grid"] == 256
    assert len(doc["wls"]["ratio"]) == len(doc["wls"]["names"]) and (out / "frame_sum_covariance.png").exists()
    assert "course camera" in capsys.readouterr().out
    assert frame_sum_covariance.main(argv) == 0
    assert json.loads((out / "frame_sum_covariance.json").read_text())["render_s"] == 0.0  # sums reused


def test_uniform_spots_render_a_camera_without_the_spots_spread(tmp_path):
    out = tmp_path / "out"
    argv = ["--frames", "1", "--sums", "3", "--no-gls", "--uniform-spots", "--out", str(out), "--threads", "1"]
    assert frame_sum_covariance.main(argv) == 0
    cam = json.loads((out / "frame_sum_covariance.json").read_text())["check"]["camera"]
    assert cam["sigma_std"] == 0.0 and cam["rho_std"] == 0.0 and cam["sigma_mean"] == 0.06   # the small camera's
    assert frame_sum_covariance.main(argv + ["--per-frame", "3"]) == 0
    assert json.loads((out / "frame_sum_covariance.json").read_text())["check"]["per_frame"] == 3.0
    # Not the sums of the spread camera: a run without the option renders its own.
    assert frame_sum_covariance.main(argv[:-5] + argv[-4:]) == 0
    assert json.loads((out / "frame_sum_covariance.json").read_text())["render_s"] > 0
