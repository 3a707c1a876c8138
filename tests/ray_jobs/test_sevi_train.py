"""The SEVI Ray Train job: a real 2-worker TorchTrainer run (gloo, CPU) and its resume."""

import pytest
import torch

TINY = ["--batch_size", "2", "--val_images", "4", "--eval_every", "2", "--checkpoint_every", "2",
        "--target_stats_draws", "100", "--width", "4", "--grid", "32", "--n_r", "16", "--n_theta", "8",
        "--electrons", "2000,3000"]


def test_two_workers_then_resume(ray_local, tmp_path):
    from ray_jobs import sevi_train
    from ray_jobs.pool import stop_pool

    argv = ["--preset", "cpu-smoke", "--name", "tiny", "--storage-path", str(tmp_path), "--num-workers", "2",
            "--pool", "test-train-pool", *TINY]
    try:
        first = sevi_train.run(argv + ["--steps", "2"]).return_value
        assert first["resumed_from"] == 0 and first["step"] == 2
        # The same command with more steps continues from the step-2 checkpoint.
        second = sevi_train.run(argv + ["--steps", "4"]).return_value
        assert second["resumed_from"] == 2 and second["step"] == 4
    finally:
        stop_pool("test-train-pool")
    final = tmp_path / "tiny" / "final" / "model.pt"
    assert first["final_model"] == second["final_model"] == str(final)
    ck = torch.load(final, map_location="cpu", weights_only=True)
    assert ck["config"]["steps"] == 4
    assert (final.parent / "config.json").exists()
    assert any((tmp_path / "tiny" / "tensorboard").iterdir()), "rank 0 writes TensorBoard events"
    assert "val/distance" in second["metrics"]


def test_bad_override_is_refused_before_ray_starts():
    from ray_jobs import sevi_train

    with pytest.raises(ValueError, match="unknown TrainConfig field 'stpes'"):
        sevi_train.run(["--stpes", "3"])


def test_gpu_workers_leave_room_for_pool_actors():
    from ray_jobs.sevi_train import worker_resources

    assert worker_resources(False, 0.25) is None
    assert worker_resources(True, 0.0) is None
    # 8 workers x 0.75 GPU + 8 actors x 0.25 GPU = 8 GPUs.
    assert worker_resources(True, 0.25) == {"CPU": 1, "GPU": 0.75}
    with pytest.raises(ValueError, match="no GPU share"):
        worker_resources(True, 1.0)
