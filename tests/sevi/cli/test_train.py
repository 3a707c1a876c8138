"""`sevi train`: a killed run's half-written files are cleaned up by the next run, and the final
model records the batch seeds its weights consumed."""
import subprocess
import sys

import torch

from sevi.cli.main import main
from sevi.io.atomic import _host


def test_a_killed_runs_temporaries_are_removed_and_the_stream_is_recorded(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    left = [tmp_path / "final" / f".model.pt.{dead}@{_host()}.ab12cd34.tmp",
            tmp_path / "checkpoints" / "checkpoint_000002" / f".model.pt.{dead}@{_host()}.ab12cd34.tmp"]
    for p in left:
        p.parent.mkdir(parents=True)
        p.write_bytes(b"half a model")
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path), "--device", "cpu", "--steps", "2",
                 "--val_images", "4", "--target_stats_draws", "50"]) == 0
    err = capsys.readouterr().err
    assert err.count("cleaned up after a killed run") == 2, err
    assert not any(p.exists() for p in left)
    final = torch.load(tmp_path / "final" / "model.pt", map_location="cpu", weights_only=True)
    assert final["stream"]["batches"] == 2 and len(final["stream"]["sha256"]) == 64
