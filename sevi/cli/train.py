"""`sevi train`: the regressor trained in this process, without Ray.

    sevi train --preset cpu-smoke --out DIR [--device auto] [--threads 1] [--field value ...]

Any ``TrainConfig`` or ``DataConfig`` field can be set as ``--field value`` (``--grid 128``,
``--electrons 150000,260000``; ``sevi.regressor.train_config``). Generation runs in the same process
as training (``make_batch`` with the step's seed), exactly the stream the Ray job's pool serves.
Checkpoints go to DIR/checkpoints, TensorBoard to DIR/tensorboard, the final model to
DIR/final/model.pt (+ config.json). Re-running the same command resumes from the latest checkpoint
in DIR/checkpoints; a resume that would change the data or the model's shape is refused with the
fields named.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ACCEPTS_FIELDS = True  # sevi.cli.main passes the unknown --field value pairs on as args.fields


def latest_checkpoint(d: Path) -> str | None:
    found = sorted(d.glob("checkpoint_*/model.pt"))
    return str(found[-1].parent) if found else None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the regressor in this process (no Ray)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-smoke")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--device", default="auto")
    # On a shared 2-core box torch's 2 OpenMP threads spin against other processes and ran a step
    # 10-100x slower than 1 thread (docs/benchmarks_history.md); 0 keeps torch's default.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's default)")
    p.set_defaults(func=run, fields=[])


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from sevi.regressor.batches import batch_seed, make_batch, make_generator
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import resolve_config
    from sevi.regressor.training import LoopContext, train_loop
    from sevi.runtime.device import pick_device
    from sevi.runtime.overrides import split_flags

    cfg = resolve_config(args.preset, split_flags(args.fields))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    from sevi.io.paths import clean_temporaries

    for folder in [out / "final", *sorted((out / "checkpoints").glob("checkpoint_*"))]:
        clean_temporaries(folder, folder=True)  # what a killed run left half-written
    device = pick_device(args.device)
    gen = make_generator(cfg.data, device)
    resume = latest_checkpoint(out / "checkpoints")
    bar = tqdm(total=cfg.steps, unit="step", desc=f"sevi {args.preset}", disable=None)

    def next_batch(step: int):
        if bar.n != step:
            bar.n = step
        bar.update(1)
        seed = batch_seed(cfg, step)
        return {**make_batch(gen, cfg.data, seed), "seed": seed}

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
    path = save_final_model(res["model"], cfg, out / "final", stream=res["stream"])
    print(f"trained to step {res['step']} in {time.perf_counter() - t0:.1f} s"
          + (f" (resumed from {resume})" if resume else "") + f"; final model: {path}")
    return 0
