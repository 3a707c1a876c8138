"""Digests of what the user-facing commands write, on fixed seeds: to show a refactor changed nothing.

    python tools/check_outputs.py --out DIR [--compare REFERENCE.json] [--write REFERENCE.json]

Runs, in a fresh directory, through the commands as users run them:

* ``sevi simulate --random 3 --grid 64 --electrons 3000 --seed 11`` (the ITM renderer) and again
  with ``--render poisson``;
* a ``tiny``-preset model trained in-process (seeded, one thread);
* ``sevi predict`` of the simulated images with that model, refined (the default);
* ``sevi simulate-frames --frames 6 --hits prior --seed 3`` and ``sevi frames --no-ray`` on them;
* ``coating simulate --cycles 1 --seed 5``, the cycle's grey box fitted in-process (short fit),
  and ``coating recommend`` for the last run;

and prints one SHA-256 per dataset or file written (every HDF5 dataset's bytes and dtype; CSV and
text files byte for byte, timings excluded). ``--compare`` reads a JSON of earlier digests and
names every one that differs (exit 1), ``--write`` stores them. The reference this repository
keeps is ``tests/data/output_digests.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def h5_digests(path: Path) -> dict[str, str]:
    """{dataset name: sha256 of dtype + shape + bytes} for every dataset of an HDF5 file."""
    import h5py
    import numpy as np

    out: dict[str, str] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            a = np.ascontiguousarray(obj[()])
            h = hashlib.sha256(str((a.dtype.descr, a.shape)).encode())
            h.update(a.tobytes())
            out[name] = h.hexdigest()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"check_outputs: {' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return res.stdout


def collect(work: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "PYTHONHASHSEED": "0"}
    py = sys.executable
    sevi = [py, "-c", "import sys; from sevi.cli.main import main; sys.exit(main())"]
    coating = [py, "-c", "import sys; from coating.cli.main import main; sys.exit(main())"]
    d: dict[str, str] = {}

    run(sevi + ["simulate", "--random", "3", "--grid", "64", "--electrons", "3000", "--seed", "11",
                "--device", "cpu", "--out", "sim.h5"], work, env)
    d.update({f"simulate/{k}": v for k, v in h5_digests(work / "sim.h5").items()})
    run(sevi + ["simulate", "--random", "3", "--grid", "64", "--electrons", "3000", "--seed", "11",
                "--device", "cpu", "--render", "poisson", "--out", "sim_poisson.h5"], work, env)
    d.update({f"simulate_poisson/{k}": v for k, v in h5_digests(work / "sim_poisson.h5").items()})

    run(sevi + ["train", "--preset", "tiny", "--device", "cpu", "--threads", "1", "--out", "run"], work, env)
    import torch
    state = torch.load(work / "run" / "final" / "model.pt", map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(state["model"]):
        h.update(k.encode())
        h.update(state["model"][k].numpy().tobytes())
    d["train_tiny/model"] = h.hexdigest()

    run(sevi + ["predict", "--model", "run/final", "--images", "sim.h5", "--device", "cpu", "--out", "answer.h5"],
        work, env)
    d.update({f"predict/{k}": v for k, v in h5_digests(work / "answer.h5").items()})

    run(sevi + ["simulate-frames", "frames.h5", "--frames", "6", "--hits", "prior", "--seed", "3",
                "--device", "cpu"], work, env)
    d.update({f"simulate_frames/{k}": v for k, v in h5_digests(work / "frames.h5").items()})
    run(sevi + ["frames", "frames.h5", "--out", "events.h5", "--no-ray", "--device", "cpu", "--chunk", "4"],
        work, env)
    d.update({f"frames/{k}": v for k, v in h5_digests(work / "events.h5").items()})

    run(coating + ["simulate", "--cycles", "1", "--seed", "5", "--out", "history.csv",
                   "--standard-out", "standard.csv"], work, env)
    d["coating_simulate/history.csv"] = file_digest(work / "history.csv")
    d["coating_simulate/standard.csv"] = file_digest(work / "standard.csv")
    fit = ("import torch; torch.set_num_threads(1)\n"
           "from coating.line.schema import read_history\n"
           "from coating.models.fit_cycles import fit_all\n"
           "fit_all(read_history('history.csv'), 'models', kinds=('greybox',),\n"
           "        hparams={'greybox': {'epochs': 2, 'inner_steps': 8, 'width': 8}}, log=lambda s: None)\n")
    run([py, "-c", fit], work, env)
    (work / "new.csv").write_text("furnace_no\nF-next\n")  # the next run of the latest cycle
    run(coating + ["recommend", "--history", "history.csv", "--runs", "new.csv", "--standard", "standard.csv",
                   "--models", "models", "--out", "rec", "--robust", "4"], work, env)
    for f in sorted((work / "rec").iterdir()):
        d[f"coating_recommend/{f.name}"] = file_digest(f)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--compare", default=None, help="JSON of reference digests: name every difference")
    ap.add_argument("--write", default=None, help="write the digests to this JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        digests = collect(work)
    for k, v in digests.items():
        print(f"{v[:16]}  {k}")
    if args.write:
        Path(args.write).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        diff = sorted(k for k in set(ref) | set(digests) if ref.get(k) != digests.get(k))
        for k in diff:
            print(f"DIFFERS: {k}: reference {str(ref.get(k))[:16]}, now {str(digests.get(k))[:16]}")
        print(f"{len(digests)} outputs, {len(diff)} differ from {args.compare}")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
