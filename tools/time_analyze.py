"""The wall time of `sevi analyze` on a course-scale frame file, as users run it.

    python tools/time_analyze.py --model runs/sevi-cpu-frames/final --frames 50000 --work /data/tmp [--keep]
    python tools/time_analyze.py --model runs/sevi-cpu-frames/final --frames 10000 --work /data/tmp --estimators gls,wls
    python tools/time_analyze.py --model runs/sevi-cpu-frames/final --frames 10000 --work /data/tmp --batches 100,0

Writes one measurement of the course's scale (drawn as ``tools/frames_to_limit.py`` draws its first:
a prior draw, 1.8-2.5e6 electrons per shell over the frames) to ``WORK/frames.h5`` in the course's
format (``FinalImage``, 1 MB per frame: 50 GB for 50,000 frames; the disk must hold it), frame
chunk by frame chunk with the fast renderer, then runs ``sevi analyze WORK/frames.h5 --model MODEL
--out WORK/answer.h5`` in a subprocess and times it (the default path: the frames streamed once,
summed, and fitted). Prints and writes ``WORK/time_analyze.json``: the wall times, the load average
before and after, the answer's Distance to the truth. The frame file is deleted unless ``--keep``.
``--estimators gls,wls`` runs `sevi analyze` once per estimator on the same file, in turn (the first
as the main figure, each in ``per_run`` with the wall-time ratio to the last); ``--batches
100,0`` likewise for ``--batches`` (with both options: every pair).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def write_frames(path: Path, m, device, chunk: int = 64) -> dict:
    """The measurement's frames written to ``path`` (FinalImage + DetectedElectrons); {"seconds", "bytes"}."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from sevi.camera.frame_renderer import FrameRenderer, shell_hit_chunks
    from sevi.io.frame_files import FrameWriter
    from sevi.io.write_behind import WriteBehind

    gen = torch.Generator(device=torch.device(device)).manual_seed(m.seed)
    rend = FrameRenderer(device=device)
    t0, first = time.perf_counter(), 0
    with (FrameWriter(path, truth=False) as w, WriteBehind() as writes,
          tqdm(total=m.n_frames, unit="frame", desc="writing") as bar):
        for x, z, frame, nb, _ in shell_hit_chunks(m.params, m.n_frames, generator=gen, chunk_frames=chunk):
            frames, _ = rend(x, z, frame, nb, gen)
            writes.submit(w.append, np.arange(first, first + nb, dtype=np.int32), frames.cpu().numpy())
            first += nb
            bar.update(nb)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--work", required=True, help="a folder on a disk that holds the frame file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", action="store_true", help="keep the frame file")
    ap.add_argument("--estimators", default=None,
                    help="comma-separated --estimator values to time in turn on the same file (default: sevi "
                         "analyze's default only)")
    ap.add_argument("--batches", default=None,
                    help="comma-separated --batches values to time in turn on the same file (default: sevi analyze's "
                         "default only)")
    a = ap.parse_args(argv)
    estimators = [e.strip() for e in a.estimators.split(",")] if a.estimators else [None]
    try:
        batches = [int(b) for b in a.batches.split(",")] if a.batches else [None]
    except ValueError:
        raise ValueError(f"--batches: got {a.batches!r}; expected comma-separated integers, e.g. 100,0") from None
    from sevi.fit.estimators import ESTIMATORS
    if not all(e is None or e in ESTIMATORS for e in estimators):
        raise ValueError(f"--estimators: got {a.estimators!r}; expected a comma-separated list of {', '.join(ESTIMATORS)}")

    import numpy as np
    import torch

    from sevi.evaluation.frames_benchmark import draw_measurements
    from sevi.io.atomic import write_json
    from sevi.io.tables import read_answer
    from sevi.physics.metric import distance

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    (m,) = draw_measurements(1, (a.frames, a.frames), a.seed)
    frames, out = work / "frames.h5", work / "answer.h5"
    doc = {"frames": a.frames, "kind": m.kind, "R": m.params.R[0].tolist(), "load_before": os.getloadavg()}
    try:
        if not frames.exists():
            doc["write"] = write_frames(frames, m, a.device)
        runs = []
        for est, nb in [(e, b) for e in estimators for b in batches]:
            run = {"estimator": est or "default", "batches": "default" if nb is None else nb}
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", "import sys; from sevi.cli.main import main; sys.exit(main())",
                                  "analyze", str(frames), "--model", str(a.model), "--out", str(out), "--device",
                                  a.device, *(["--estimator", est] if est else []),
                                  *(["--batches", str(nb)] if nb is not None else [])],
                                 check=False, capture_output=True, text=True)
            run["analyze_s"] = time.perf_counter() - t0
            run["load_after"] = os.getloadavg()
            run["analyze_exit"] = res.returncode
            run["analyze_output"] = (res.stdout + res.stderr)[-2000:]
            if res.returncode == 0:
                ans = read_answer(out)  # two rows, smaller R first
                beta = torch.as_tensor(np.ascontiguousarray(ans["beta"]), dtype=m.params.beta.dtype)  # a record view
                run["distance"] = float(distance(beta[None], m.params.beta)[0])
                run["answer_R"] = ans["R"].tolist()
            runs.append(run)
        doc.update({k: v for k, v in runs[0].items() if k not in ("estimator", "batches")})
        if len(runs) > 1:
            for r in runs:
                r["ratio_to_last"] = r["analyze_s"] / runs[-1]["analyze_s"]
            doc["per_run"] = [{k: v for k, v in r.items() if k != "analyze_output"} for r in runs]
    finally:
        if not a.keep and frames.exists():
            frames.unlink()
    write_json(work / "time_analyze.json", doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "analyze_output"}, indent=1))
    print(doc.get("analyze_output", "")[-600:])
    return 0 if doc.get("analyze_exit") == 0 else 1


if __name__ == "__main__":
    from sevi.cli.policy import run_command

    sys.exit(run_command("time_analyze", None, main))
