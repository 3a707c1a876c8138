"""Training images/s fed by the generator pool against the same loop fed in-process, same run.

Both runs call ``sevi.regressor.training.train_loop`` with the same config and the same batch seeds; only
the feed differs: ``PoolFeed`` (Ray actors, several requests in flight) or ``StreamBatches`` (the
same recipe in this process, so the loop waits for every batch). Throughput is the steady step
cadence (the first ``--warmup`` steps and the final evaluation are excluded); the wait fraction
is the share of that time the loop spent blocked in ``next_batch``.

    python tools/bench_train.py --preset cpu-smoke --steps 30            # target ratio >= 0.95
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import torch

from sevi.evaluation.timed_feed import TimedFeed


def run(cfg, feed, warmup):
    from sevi.regressor.training import LoopContext, train_loop

    timed = TimedFeed(feed)
    train_loop(cfg, timed, LoopContext(out_dir=tempfile.mkdtemp(prefix="bench_train_")))
    return timed.rate(cfg.data.batch_size, warmup)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-smoke")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--actors", type=int, default=2, help="pool actors (the job's CPU default: 2 x 0.5 CPU)")
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--trainer-threads", type=int, default=None, help="torch threads of the loop (default: all)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from ray_jobs.feeds import PoolFeed
    from sevi.regressor.batches import StreamBatches
    from ray_jobs.pool import PoolClient, PoolSpec, get_or_create_pool, stop_pool
    from sevi.io.atomic import write_json
    from sevi.regressor.train_config import resolve_config
    from sevi.runtime.device import pick_device

    if a.trainer_threads:
        torch.set_num_threads(a.trainer_threads)
    cfg = dataclasses.replace(resolve_config(a.preset), steps=a.steps, eval_every=10**9, checkpoint_every=10**9,
                              val_images=8)
    device = pick_device("auto")
    params = dataclasses.asdict(cfg.data)  # what the pool receives
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        on_gpu = device.type == "cuda"
        handles = get_or_create_pool(PoolSpec("bench", a.actors, 0.25 if on_gpu else 0.0, 1.0 if on_gpu else 0.5))
        pool_rate, pool_wait = run(cfg, PoolFeed(PoolClient(handles, a.in_flight), "sevi-images", params, cfg.seed), a.warmup)
    finally:
        stop_pool("bench")
        ray.shutdown()
    local_rate, local_wait = run(cfg, StreamBatches(cfg.data, device, cfg.seed), a.warmup)
    out = {"device": str(device), "preset": a.preset, "batch_size": cfg.data.batch_size, "steps": a.steps,
           "pool_actors": a.actors, "in_flight": a.in_flight, "cpu_count": os.cpu_count(),
           "pool_images_per_s": pool_rate, "pool_wait_fraction": pool_wait,
           "local_images_per_s": local_rate, "local_wait_fraction": local_wait, "ratio": pool_rate / local_rate}
    print(f"preset {a.preset}, batch {cfg.data.batch_size}, {a.steps} steps ({a.warmup} warm-up), device {device}")
    print(f"  fed by the pool ({a.actors} actor(s), {a.in_flight} in flight): {pool_rate:8.1f} images/s, "
          f"waiting for data {100 * pool_wait:5.1f}% of step time")
    print(f"  fed in-process                         : {local_rate:8.1f} images/s, "
          f"waiting for data {100 * local_wait:5.1f}% of step time")
    print(f"  ratio pool / in-process                : {pool_rate / local_rate:8.2f}")
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
