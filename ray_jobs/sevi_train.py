"""Ray Train job: the SEVI ResNet34 regressor on batches pulled from the shared generator pool.

    # laptop: starts a local Ray instance, CPU, small preset (the README's main command)
    python -m ray_jobs.sevi_train --preset cpu-smoke

    # cluster (after `ray up cluster.yaml` and `ray dashboard cluster.yaml`)
    RAY_ADDRESS=http://localhost:8265 ray job submit --working-dir . -- \\
        python -m ray_jobs.sevi_train --preset a100 --num-workers 8 --name sevi-a100 --storage-path s3://BUCKET/runs

Any TrainConfig field can be overridden as ``--field value`` (type-checked; unknown fields are
refused). Running the same command again (same ``--name`` and ``--storage-path``) resumes from the
latest checkpoint; a run that already finished with the same config is not run again. The final
model goes to ``<storage-path>/<name>/final/model.pt`` with its config beside it, and the job
prints that path. TensorBoard: ``tensorboard --logdir <storage-path>``.

``--storage-path`` is a local path or a URI (s3://, gs://, file://). In a job submitted with
``--working-dir`` a relative path is refused: it would land in Ray's temporary copy of the
directory and vanish with the job (``ray_jobs.storage``). Every wait is bounded by ``--wait-s``:
for GPUs (the a100 preset refuses to run on a cluster without them), for the pool, and for the
training workers; the job then ends with one line saying what it asked for and what the cluster has.

The training loop itself is ``sevi.regressor.training.train_loop``: plain PyTorch that runs without Ray.
This file only orchestrates: the pool, the workers, checkpoints and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "sevi-images"
GPU_PRESETS = {"a100"}  # sized for GPUs: with --use-gpu auto they wait (bounded) for GPUs, never fall back to CPU
DEFAULT_WAIT_S = 120.0  # the same default as ray_jobs.pool.DEFAULT_WAIT_S (not imported: that imports ray)
KEEP_CHECKPOINTS = 2  # checkpoint folders kept per run (Ray Train's num_to_keep, and the final prune)
WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train V2, propagated to its controller


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.sevi_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-smoke", help="cpu-smoke | a100 (default cpu-smoke)")
    ap.add_argument("--name", default=None, help="run name (default: sevi-<preset>)")
    ap.add_argument("--storage-path", default="runs", help="where checkpoints, TensorBoard and the final model go")
    ap.add_argument("--num-workers", type=int, default=None,
                    help="training workers (DDP); 0 runs the loop in this process (Ray Train local mode)")
    ap.add_argument("--use-gpu", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--pool", default="gen", help="name of the shared generator pool (created if missing)")
    ap.add_argument("--pool-actors", type=int, default=None, help="actors to create if the pool does not exist")
    ap.add_argument("--gpus-per-actor", type=float, default=None, help="default 0.25 on GPU clusters, 0 on CPU")
    ap.add_argument("--in-flight", type=int, default=4, help="pool requests in flight per worker")
    ap.add_argument("--no-pool", action="store_true", help="generate in each worker's process instead of the pool")
    ap.add_argument("--max-failures", type=int, default=3, help="worker-group restarts survived (FailureConfig)")
    ap.add_argument("--wait-s", type=float, default=None,
                    help=f"longest wait for GPUs, the pool and the workers (default {DEFAULT_WAIT_S:.0f})")
    ap.add_argument("--pool-idle-timeout-s", type=float, default=None,
                    help="pool actors created by this job exit after this long without a request (default 600)")
    ap.add_argument("--address", default=None, help="Ray address; default: RAY_ADDRESS, or a new local instance")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray instance")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    args, rest = ap.parse_known_args(argv)
    from sevi.runtime.overrides import split_flags
    try:
        args.overrides = split_flags(rest)
    except ValueError as e:
        ap.error(str(e))
    check_args(args)
    return args


def check_args(args) -> None:
    """Refuse an option out of range in one line (InputError), before Ray starts."""
    import math

    from sevi.runtime.errors import InputError

    def bad_seconds(v):
        return v is not None and not (v >= 0 and math.isfinite(v))
    for bad, text in (
        (args.num_workers is not None and args.num_workers < 0,
         f"--num-workers: got {args.num_workers}; expected >= 0 training workers (0: the loop in this process)"),
        (args.in_flight < 1, f"--in-flight: got {args.in_flight}; expected >= 1 pool requests per worker"),
        (args.max_failures < -1, f"--max-failures: got {args.max_failures}; expected >= 0 restarts (-1: no limit)"),
        (bad_seconds(args.wait_s), f"--wait-s: got {args.wait_s}; expected a finite number of seconds >= 0"),
        (bad_seconds(args.pool_idle_timeout_s),
         f"--pool-idle-timeout-s: got {args.pool_idle_timeout_s}; expected a finite number of seconds >= 0 (0: never)"),
        (args.pool_actors is not None and args.pool_actors < 1,
         f"--pool-actors: got {args.pool_actors}; expected >= 1 actors"),
        (args.gpus_per_actor is not None and not 0 <= args.gpus_per_actor < 1,
         f"--gpus-per-actor: got {args.gpus_per_actor}; expected a share of a GPU in [0, 1)"),
        (args.num_cpus is not None and args.num_cpus < 1, f"--num-cpus: got {args.num_cpus}; expected >= 1"),
        (not args.pool or "/" in args.pool, f"--pool: got {args.pool!r}; expected a name (no '/')"),
        (args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")),
         f"--name: got {args.name!r}; expected a run name (a folder name, no '/')"),
    ):
        if bad:
            raise InputError(text)


def worker_resources(use_gpu: bool, actor_gpus: float) -> dict | None:
    """What each training worker reserves. With GPU pool actors beside them, a worker takes the
    rest of its GPU (1 - actor_gpus), so N workers and N actors of actor_gpus fit on N GPUs instead
    of waiting for GPUs that the actors hold."""
    if not use_gpu or actor_gpus <= 0:
        return None
    if actor_gpus >= 1:
        raise ValueError(f"--gpus-per-actor {actor_gpus} leaves no GPU share for the training workers")
    return {"CPU": 1, "GPU": round(1.0 - actor_gpus, 4)}


def worker_bundle(use_gpu: bool, actor_gpus: float) -> dict:
    """The resources one training worker reserves (Ray Train's default when worker_resources is None)."""
    return worker_resources(use_gpu, actor_gpus) or ({"GPU": 1} if use_gpu else {"CPU": 1})


def finished_run(run_dir: str, cfg) -> str | None:
    """The final model of a run that finished with this config, or None (then train, or resume)."""
    import json

    from ray_jobs import storage
    from sevi.regressor.train_config import config_from_dict

    path = storage.join(run_dir, "final", "config.json")
    if not storage.exists(path) or not storage.exists(storage.join(run_dir, "final", "model.pt")):
        return None
    try:
        saved = config_from_dict(json.loads(storage.read_bytes(path)))
    except (ValueError, TypeError):
        return None
    return storage.join(run_dir, "final", "model.pt") if saved == cfg else None


def newest_checkpoint(run_dir: str, registered=None):
    """The checkpoint to resume from: the newest complete ``checkpoint_*`` folder of the run.

    Ray Train resumes from the latest checkpoint its controller registered, which can lag the
    latest one the workers wrote (a worker killed just after a report): resuming from that one
    would redo the steps in between. Folder names carry their time (``checkpoint_<date>_<time>``),
    so the newest is the last by name; one whose model.pt does not load (cut off mid-copy) is
    skipped. Returns a ``ray.train.Checkpoint`` or None (``registered`` when the listing finds none).
    """
    import ray.train

    from ray_jobs import storage
    from sevi.regressor.checkpoints import checkpoint_step

    for path in sorted(storage.list_dirs(run_dir, "checkpoint_"), reverse=True):
        candidate = ray.train.Checkpoint(path)
        try:
            with candidate.as_directory() as d:
                checkpoint_step(d)
        except Exception:  # noqa: BLE001 - an incomplete folder: try the next older one
            continue
        return candidate
    return registered


def prune_checkpoints(run_dir: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` checkpoint folders of a finished run (call it after
    ``fit`` returns, never while Ray Train may still prune); returns the deleted.

    Ray Train deletes only checkpoints its controller registered, so one written just before a
    worker was killed (and resumed from, ``newest_checkpoint``) stays behind for ever otherwise.
    """
    from ray_jobs import storage

    old = sorted(storage.list_dirs(run_dir, "checkpoint_"), reverse=True)[keep:]
    for path in old:
        storage.remove_dir(path)
    return old


def train_fn(config: dict) -> dict:
    """Runs on every Ray Train worker (or in-process in local mode)."""
    import ray.train
    import ray.train.torch
    import torch

    from ray_jobs import storage
    from ray_jobs.feeds import PoolFeed
    from ray_jobs.pool import PoolClient, PoolSpec
    from sevi.regressor.batches import StreamBatches
    from sevi.regressor.checkpoints import checkpoint_step, save_final_model
    from sevi.regressor.train_config import config_from_dict
    from sevi.regressor.training import LoopContext, train_loop

    cfg = config_from_dict(config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config.get("threads", 1))))
    if config["use_pool"]:
        # connect(spec): if the pool's actors exited (idle timeout) they are made again, not waited for.
        client = PoolClient.connect(PoolSpec(**config["pool_spec"]), config["in_flight"], config["wait_s"])
        # The pool receives exactly the DataConfig: every batch is a function of it and the seed.
        feed = PoolFeed(client, RECIPE, dataclasses.asdict(cfg.data), cfg.seed, rank, world)
    else:
        feed = StreamBatches(cfg.data, device, cfg.seed, rank, world)

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        # Per-coefficient errors go to TensorBoard only; Ray prints every reported metric.
        slim = {k: v for k, v in metrics.items() if not k.startswith("val_coef/")}
        ck = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report({**slim, "generator_wait_s": feed.wait_s}, checkpoint=ck)
        if ck is not None and remote and rank == 0 and Path(tb_dir).exists():
            storage.upload_dir(tb_dir, storage.join(run_dir, "tensorboard"))  # TensorBoard follows every checkpoint

    t_start = time.perf_counter()

    def next_batch(step: int) -> dict:
        # A progress line every 25 steps on rank 0: Ray's output is what a cluster user watches.
        if rank == 0 and step % 25 == 0:
            dt = time.perf_counter() - t_start
            # sys.stdout.write, not print: Ray Train patches print() on workers to also log the line,
            # and both copies reach the driver.
            sys.stdout.write(f"sevi_train: step {step}/{cfg.steps}, {dt:.0f} s, waiting for data {feed.wait_s:.0f} s\n")
            sys.stdout.flush()
        return feed(step)

    run_dir = config["run_dir"]  # a local path or a storage URI
    remote = storage.is_uri(run_dir)
    checkpoint = newest_checkpoint(run_dir, ray.train.get_checkpoint())
    with (checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)) as resume_dir, \
            tempfile.TemporaryDirectory(prefix="sevi-ckpt-") as out_dir, \
            tempfile.TemporaryDirectory(prefix="sevi-out-") as stage:
        resumed_from = checkpoint_step(resume_dir) if resume_dir else 0
        # TensorBoard writes local files: with a URI it writes to a staging folder that is copied
        # to <run_dir>/tensorboard at every checkpoint and at the end.
        tb_dir = str(Path(stage) / "tensorboard") if remote else storage.join(run_dir, "tensorboard")
        loop = LoopContext(rank=rank, world_size=world, device=device, wrap_model=ray.train.torch.prepare_model,
                           report=report, resume_dir=resume_dir, log_dir=tb_dir if rank == 0 else None,
                           out_dir=out_dir)
        result = train_loop(cfg, next_batch, loop)
        if rank == 0:
            if remote:
                save_final_model(result["model"], cfg, Path(stage) / "final", stream=result["stream"])
                storage.upload_dir(str(Path(stage) / "final"), storage.join(run_dir, "final"))
                if Path(tb_dir).exists():
                    storage.upload_dir(tb_dir, storage.join(run_dir, "tensorboard"))
                final = storage.join(run_dir, "final", "model.pt")
            else:
                final = save_final_model(result["model"], cfg, Path(run_dir) / "final", stream=result["stream"])
            return {"final_model": final, "resumed_from": resumed_from, "step": result["step"],
                    "stream": result["stream"],
                    "metrics": {k: v for k, v in result["metrics"].items() if not k.startswith("val_coef/")}}
    return {}


def fit_interruptibly(trainer, run_dir: str):
    """``trainer.fit()``, run in a thread so that Ctrl-C, SIGTERM (``ray job stop``) and SIGHUP
    reach this process's handlers (``sevi.cli.policy``): in the main thread Ray Train puts its own
    SIGINT handler in place for good, which on a terminal's Ctrl-C ended the job with exit 1 and no
    word. On an interrupt Ray is shut down (the workers stop; written checkpoints stay) and
    KeyboardInterrupt says where the run can be resumed from."""
    import threading

    import ray

    box: dict = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread below
            box["error"] = e

    t = threading.Thread(target=target, name="sevi_train-fit", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.25)
    except KeyboardInterrupt:
        ray.shutdown()
        t.join(30)
        raise KeyboardInterrupt(f"checkpoints kept in {run_dir}; run the same command to resume") from None
    if "error" in box:
        raise box["error"]
    return box["result"]


class Finished:
    """What ``run`` returns for a run that had already finished: no fit, the final model's path."""

    def __init__(self, final_model: str, steps: int):
        self.return_value = {"final_model": final_model, "step": steps, "already_finished": True, "metrics": {}}
        self.path = None


def run(argv=None):
    """Parse, connect (or start local Ray), make sure the pool exists, fit. Returns Ray's Result
    (or ``Finished`` when the same run had already finished). Raises ``storage.OutputPathError``
    and ``pool.ResourcesUnavailable`` with the one line to show."""
    args = parse_args(argv)
    for k, v in {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(k, v)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_jobs import storage
    from ray_jobs.pool import (
        ResourcesUnavailable,
        _fmt,
        connect,
        ensure_pool,
        pool_spec,
        shortage,
        wait_for_resources,
    )
    from sevi.regressor.train_config import resolve_config

    cfg = resolve_config(args.preset, args.overrides)  # fails fast on a bad override, before Ray starts
    name = args.name or f"sevi-{args.preset}"
    storage_path = storage.resolve_output(args.storage_path, "--storage-path", "sevi_train")
    run_dir = storage.join(storage_path, name)
    if not storage.is_uri(run_dir):  # a killed driver's half-written final model (sevi.io.atomic)
        from sevi.io.paths import clean_temporaries

        clean_temporaries(Path(run_dir) / "final", folder=True)
    done = finished_run(run_dir, cfg)
    if done:
        return Finished(done, cfg.steps)
    wait_s = DEFAULT_WAIT_S if args.wait_s is None else args.wait_s
    address = args.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        pass  # called from a process already connected (tests, notebooks)
    elif address:
        connect(address, wait_s, "sevi_train")  # at most --wait-s, then one line
    else:  # the embedded default: a fresh local instance, never a cluster found by accident
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # The dashboard process also serves the state API that Ray Train's controller polls.
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1")
    from sevi.cli.policy import reinstall_signal_handlers

    reinstall_signal_handlers()  # ray.init put sys.exit(15) on SIGTERM
    # A GPU preset waits for GPUs (a placement-group request also asks an autoscaler for a GPU
    # node), and refuses to run without them rather than training for days on CPU.
    needs_gpu = args.use_gpu == "yes" or (args.use_gpu == "auto" and args.preset in GPU_PRESETS)
    if needs_gpu and ray.cluster_resources().get("GPU", 0) <= 0 and not wait_for_resources([{"GPU": 1}], wait_s):
        raise ResourcesUnavailable(
            f"sevi_train: preset '{args.preset}' needs GPUs and the cluster has none after {wait_s:.0f} s "
            f"(it has {_fmt(ray.cluster_resources())}); use a CPU preset (--preset cpu-smoke) or --use-gpu no")
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    use_gpu = needs_gpu or (args.use_gpu == "auto" and has_gpu)
    num_workers = args.num_workers if args.num_workers is not None else (1 if not has_gpu else int(ray.cluster_resources()["GPU"]))
    spec = pool_spec(ray.cluster_resources(), args.pool, args.pool_actors, args.gpus_per_actor,
                     idle_timeout_s=args.pool_idle_timeout_s)
    stats = [] if args.no_pool else ensure_pool(spec, wait_s, log=lambda line: print(f"sevi_train: {line}"))
    actor_gpus = 0.0 if args.no_pool else spec.gpus_per_actor
    bundles = [worker_bundle(use_gpu, actor_gpus)] * num_workers  # num_workers 0: the loop runs in this process
    if not wait_for_resources(bundles, wait_s):
        raise ResourcesUnavailable(shortage("sevi_train", bundles, args.pool, stats, wait_s))
    # Backstop for a race after the probe: Ray Train gives up on its worker group after this long
    # instead of retrying for ever (controller_failure_limit=0 below).
    os.environ[WORKER_START_TIMEOUT_ENV] = str(max(wait_s, 30.0))

    cpus = ray.cluster_resources().get("CPU", 1)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={"train": dataclasses.asdict(cfg), "use_pool": not args.no_pool, "pool": args.pool,
                           "pool_spec": dataclasses.asdict(spec), "wait_s": wait_s,
                           "in_flight": args.in_flight, "run_dir": run_dir,
                           "threads": max(1, int(cpus // max(num_workers, 1)) - (0 if args.no_pool else 1))},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=worker_resources(use_gpu, actor_gpus)),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=args.max_failures, controller_failure_limit=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS)),
    )
    try:
        result = fit_interruptibly(trainer, run_dir)
    except ray.train.ControllerError as e:
        from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

        if isinstance(e.controller_failure, WorkerGroupStartupTimeoutError):
            raise ResourcesUnavailable(shortage("sevi_train", bundles, args.pool, stats, wait_s)) from None
        raise
    # After fit, when Ray Train has registered (and pruned) everything it will: what is left beyond
    # KEEP_CHECKPOINTS was written but never registered (a killed worker's last report).
    prune_checkpoints(run_dir, KEEP_CHECKPOINTS)
    return result


def main(argv=None) -> int:
    """The job's entry point, under the project's one error policy (``sevi.cli.policy``): a bad
    option or input, an output path the job cannot use, resources that cannot be had within
    ``--wait-s``: one line and exit status 2, whether run here or through ``ray job submit`` (then
    it is the job log's last line); Ctrl-C or ``ray job stop`` (SIGTERM): one line, 130 or 143."""
    from sevi.cli.policy import run_command

    exiting = argv is None  # a process entry point: sevi.cli.policy.run_command
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("sevi_train", None, lambda: _main(argv), debug="--debug" in argv, exiting=exiting)


def _main(argv) -> int:
    result = run(argv)
    value = result.return_value or {}
    if value.get("already_finished"):
        print(f"sevi_train: already finished at step {value['step']}; final model at {value['final_model']}")
        return 0
    for k, v in sorted(value.get("metrics", {}).items()):
        if k.startswith("val/") and "coverage" not in k:  # coverage is before the final error-bar calibration
            print(f"{k:28s} {v:.4f}")
    if value.get("resumed_from"):
        print(f"resumed from the checkpoint of step {value['resumed_from']}")
    stream = value.get("stream") or {}
    if stream.get("sha256"):
        print(f"data stream: {stream['batches']} batches, seeds sha256 {stream['sha256'][:16]}")
    print(f"final model: {value.get('final_model')}")
    print(f"TensorBoard: tensorboard --logdir {result.path.rsplit('/', 1)[0] if result.path else 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
