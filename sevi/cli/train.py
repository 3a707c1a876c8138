"""Train in-process without Ray: ``python -m sevi.cli.train --preset cpu-smoke [--field value ...] --out DIR``.

Generation runs in the same process as training (``make_batch`` with the step's seed), exactly the
stream the Ray job's pool serves. Checkpoints go to DIR/checkpoints, TensorBoard to
DIR/tensorboard, the final model to DIR/final/model.pt (+ config.json). Re-running the same
command resumes from the latest checkpoint in DIR/checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def latest_checkpoint(d: Path) -> str | None:
    found = sorted(d.glob("checkpoint_*/model.pt"))
    return str(found[-1].parent) if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sevi.cli.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-smoke")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--device", default="auto")
    # On a shared 2-core box torch's 2 OpenMP threads spin against other processes and ran a step
    # 10-100x slower than 1 thread (docs/benchmarks_history.md); 0 keeps torch's default.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's default)")
    args, rest = ap.parse_known_args(argv)

    import torch
    from tqdm import tqdm

    from sevi.regressor.batches import batch_seed, make_batch, make_generator
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import resolve_config
    from sevi.regressor.training import LoopContext, train_loop
    from sevi.runtime.device import pick_device
    from sevi.runtime.overrides import split_flags

    try:
        cfg = resolve_config(args.preset, split_flags(rest))
    except ValueError as e:
        raise SystemExit(f"train_local: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    device = pick_device(args.device)
    gen = make_generator(cfg, device)
    resume = latest_checkpoint(out / "checkpoints")
    bar = tqdm(total=cfg.steps, unit="step", desc=f"sevi {args.preset}", disable=None)

    def next_batch(step: int):
        if bar.n != step:
            bar.n = step
        bar.update(1)
        return make_batch(gen, cfg, batch_seed(cfg, step))

    def report(metrics: dict, ckpt: str | None):
        shown = {k.split("/")[-1]: round(v, 4) for k, v in metrics.items() if k in ("loss", "val/distance")}
        bar.set_postfix(shown)
        if "val/distance" in metrics:
            tqdm.write(f"step {metrics['step']}: " + " ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val/") or k == "loss"))

    t0 = time.perf_counter()
    res = train_loop(cfg, next_batch, LoopContext(device=device, report=report, resume_dir=resume,
                                                  log_dir=str(out / "tensorboard"), out_dir=str(out / "checkpoints")))
    bar.close()
    path = save_final_model(res["model"], cfg, out / "final")
    print(f"trained to step {res['step']} in {time.perf_counter() - t0:.1f} s"
          + (f" (resumed from {resume})" if resume else "") + f"; final model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
