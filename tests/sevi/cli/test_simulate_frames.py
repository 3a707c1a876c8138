"""sevi.cli.simulate_frames (`sevi simulate-frames`): the disc radius and the refused options."""
import argparse

import numpy as np

from sevi.cli import simulate_frames
from sevi.io.frame_files import read_truth


def test_simulate_frames_disc_radius_puts_every_hit_inside_it(tmp_path):
    import pytest

    out = tmp_path / "f.h5"
    args = argparse.Namespace(out=str(out), frames=2, per_frame=40.0, hits="disc:0.3", seed=0, batch=2, device="cpu")
    assert simulate_frames.run(args) == 0
    truth = read_truth(out)
    assert len(truth) > 40 and np.hypot(truth["x"], truth["z"]).max() <= 0.3
    assert simulate_frames._disc_radius("disc") == 0.95
    for bad in ("disc:", "disc:0", "disc:2", "disc:x"):
        with pytest.raises(SystemExit, match="disc:R"):
            simulate_frames._disc_radius(bad)


def test_simulate_frames_refuses_bad_counts_and_unknown_hits(tmp_path):
    import pytest

    base = dict(out=str(tmp_path / "f.h5"), frames=2, per_frame=40.0, hits="disc", seed=0, batch=2, device="cpu")
    for kw, text in ((dict(frames=0), "--frames: got 0"), (dict(per_frame=-5.0), "--per-frame: got -5.0"),
                     (dict(per_frame=float("nan")), "--per-frame: got nan"), (dict(batch=0), "--batch: got 0"),
                     (dict(hits="shell"), "--hits shell: not one of disc, disc:R, shells, prior, and no such file"),
                     (dict(device="tpu"), "--device tpu")):
        with pytest.raises(ValueError, match=text.replace("[", r"\[")):
            simulate_frames.run(argparse.Namespace(**{**base, **kw}))
    assert not (tmp_path / "f.h5").exists()
