"""ray_jobs.frames_job: the Ray runner gives the in-process result."""
import numpy as np

from sevi.cli.frames import run as run_frames
from sevi.io.frame_files import read_events
from tests.sevi.camera.test_centroid_file import frame_file, frames_args, reference  # noqa: F401,F811 (fixtures)


def test_ray_tasks_give_the_in_process_result(frame_file, reference, tmp_path, ray_local):
    out = tmp_path / "ray.h5"
    assert run_frames(frames_args(frame_file, out, no_ray=False)) == 0
    a, b = read_events(out)[0], reference[0]
    # Same chunks; only float32 rounding (threads, batch layout) may differ.
    np.testing.assert_array_equal(a["ImageId"], b["ImageId"])
    np.testing.assert_allclose(a["x"], b["x"], atol=0.01 / 512, err_msg="Ray vs in-process x, 0.01 px")
    np.testing.assert_allclose(a["z"], b["z"], atol=0.01 / 512, err_msg="Ray vs in-process z, 0.01 px")
