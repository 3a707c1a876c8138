"""Ray Tune: the SEVI regressor's depth, width, input and optimiser swept within a preset's budget,
every trial judged on the same held-out images and kept.

    python -m ray_jobs.sevi_sweep --preset cpu            # a 2-core CPU
    python -m ray_jobs.sevi_sweep --smoke-test            # CI, about a minute
    python -m ray_jobs.sevi_sweep --preset cpu --space '{"width": ["choice", [8, 16]]}' --num-samples 4

What is searched, how a trial is judged and the table's columns: ``sevi.evaluation.regressor_sweep``
(this file only orchestrates Ray). Trials train with ``sevi.regressor.training.train_loop`` on
batches from the shared generator pool (recipe ``sevi-images``, as ``ray_jobs.sevi_train``), so a
sweep runs beside the other jobs; ASHA stops trials on the validation loss (the validation set's
mean Distance, reported at every validation). A trial that trains to the end is judged on the
held-out images and saves its model with its figures.

Outputs (``--out``, default ``<storage-path>/<name>-<key>``): ``trials.csv`` (every trial: its
configuration, its figures, finished / stopped early / failed and why), ``pareto.png``, and
TensorBoard's HParams view of the Tune experiment (``tensorboard --logdir <storage-path>``).

Resume is keyed on the inputs (space, budget, base config, held-out images): ``<key>`` is their
digest and ``<name>-<key>.inputs.json`` records them. The same command again resumes an
interrupted sweep (its driver killed) and, once the sweep finished, reuses it and trains nothing;
a changed space or budget starts a new sweep beside the old one and says what changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "sevi-images"
RECORD_SUFFIX = ".inputs.json"


def parse_args(argv=None):
    from sevi.evaluation.regressor_sweep import SWEEP_PRESETS

    ap = argparse.ArgumentParser(prog="python -m ray_jobs.sevi_sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", help=f"sweep preset: {', '.join(SWEEP_PRESETS)} (default cpu)")
    ap.add_argument("--smoke-test", action="store_true", help="the smoke preset (CI, about a minute)")
    ap.add_argument("--space", default=None,
                    help="search space entries (JSON text or file) replacing the preset's, e.g. "
                         "'{\"width\": [\"choice\", [8, 16]]}'")
    ap.add_argument("--num-samples", type=int, default=None, help="trials (default: the preset's)")
    ap.add_argument("--steps", type=int, default=None, help="steps of a trial not stopped early (default: the preset's)")
    ap.add_argument("--held-out", type=int, default=None, help="held-out images (default: the preset's)")
    ap.add_argument("--held-out-seed", type=int, default=2024)
    ap.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: the preset's)")
    ap.add_argument("--name", default="sevi-sweep")
    ap.add_argument("--storage-path", default="runs")
    ap.add_argument("--out", default=None, help="where trials.csv and pareto.png go (default: beside the experiment)")
    ap.add_argument("--pool", default="gen", help="shared generator pool (created if missing)")
    ap.add_argument("--in-flight", type=int, default=2, help="pool requests in flight per trial")
    ap.add_argument("--address", default=None, help="Ray address; default RAY_ADDRESS or a new local instance")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray instance")
    ap.add_argument("--wait-s", type=float, default=120.0, help="longest wait for the pool and a trial's resources")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    args = ap.parse_args(argv)
    check_args(args)
    return args


def check_args(args) -> None:
    """Options, the space and the budget checked before Ray starts; InputError in one line."""
    import dataclasses
    import math

    from sevi.evaluation.regressor_sweep import SWEEP_PRESETS, check_grids, check_space, check_values, load_space
    from sevi.regressor.train_config import resolve_config
    from sevi.runtime.errors import InputError

    if args.smoke_test:
        args.preset = "smoke"
    if args.preset not in SWEEP_PRESETS:
        raise InputError(f"--preset {args.preset!r}: unknown sweep preset; choose one of {', '.join(SWEEP_PRESETS)}")
    for bad, text in (
        (args.num_samples is not None and args.num_samples < 1, f"--num-samples: got {args.num_samples}; expected >= 1"),
        (args.steps is not None and args.steps < 1, f"--steps: got {args.steps}; expected >= 1"),
        (args.held_out is not None and args.held_out < 1, f"--held-out: got {args.held_out}; expected >= 1 images"),
        (args.max_concurrent is not None and args.max_concurrent < 1,
         f"--max-concurrent: got {args.max_concurrent}; expected >= 1"),
        (args.in_flight < 1, f"--in-flight: got {args.in_flight}; expected >= 1"),
        (not (args.wait_s >= 0 and math.isfinite(args.wait_s)), f"--wait-s: got {args.wait_s}; expected seconds >= 0"),
        (args.num_cpus is not None and args.num_cpus < 1, f"--num-cpus: got {args.num_cpus}; expected >= 1"),
        (not args.name or "/" in args.name, f"--name: got {args.name!r}; expected a sweep name (no '/')"),
        (not args.pool or "/" in args.pool, f"--pool: got {args.pool!r}; expected a pool name"),
    ):
        if bad:
            raise InputError(text)
    preset = SWEEP_PRESETS[args.preset]
    space = dict(preset.space)
    if args.space is not None:
        space.update(load_space(args.space) if args.space.strip() else {})
        if not isinstance(load_space(args.space), dict):
            raise InputError(f"--space: expected a JSON object of field: [sampler, ...], got {args.space[:80]!r}")
    space = check_space(space)
    changes = {k: v for k, v in (("num_samples", args.num_samples), ("steps", args.steps),
                                 ("held_out", args.held_out), ("max_concurrent", args.max_concurrent)) if v is not None}
    preset = dataclasses.replace(preset, **changes)
    if preset.eval_every > preset.steps:
        preset = dataclasses.replace(preset, eval_every=preset.steps)
    args.sweep_preset, args.space_checked = preset, space
    args.base = resolve_config(preset.base)
    check_grids(space, args.base, preset.held_out_grid)
    check_values(space, args.base, preset)


def trial_fn(config: dict, base: dict, preset: dict, held, pool_spec: dict, in_flight: int, wait_s: float) -> None:
    """One trial: train on pool batches, report the validation loss to ASHA at every validation,
    then (if not stopped) judge on the held-out images and save the model with its figures."""
    import dataclasses

    import torch
    from ray import tune

    from ray_jobs.feeds import PoolFeed
    from ray_jobs.pool import PoolClient, PoolSpec
    from sevi.evaluation.regressor_sweep import SweepPreset, judge, trial_config
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import config_from_dict
    from sevi.regressor.training import LoopContext, train_loop
    from sevi.runtime.threads import apply_thread_policy

    apply_thread_policy(None, work="small")  # one thread: trials and pool actors share the node (docs/ray.md)
    sweep = SweepPreset(**preset)
    cfg = trial_config(config_from_dict(base), config, sweep)
    from sevi.evaluation.regressor_sweep import count_flops, resolved_fields
    from sevi.regressor.checkpoints import build_model

    resolved = resolved_fields(cfg)  # cfg_<field>: what the trial trained, defaults included
    shape = build_model(cfg)
    resolved.update(parameters=int(sum(q.numel() for q in shape.parameters())),
                    flops_per_image=count_flops(shape, torch.zeros(1, *cfg.data.features.shape)))
    del shape
    client = PoolClient.connect(PoolSpec(**pool_spec), in_flight, wait_s)
    feed = PoolFeed(client, RECIPE, dataclasses.asdict(cfg.data), cfg.seed)
    last = dict(resolved)
    t0 = time.perf_counter()

    def report(metrics: dict, checkpoint_dir) -> None:
        if "val/distance" in metrics:
            last.update(val_loss=float(metrics["val/distance"]), steps_done=int(metrics["step"]))
            tune.report({**last, "generator_wait_s": feed.wait_s, "train_s": time.perf_counter() - t0})

    with tempfile.TemporaryDirectory(prefix="sevi-sweep-ckpt-") as out_dir:
        result = train_loop(cfg, feed, LoopContext(report=report, out_dir=out_dir))
    train_s = time.perf_counter() - t0
    figures = judge(result["model"], cfg, held, "cpu")
    with tempfile.TemporaryDirectory(prefix="sevi-sweep-model-") as d:
        save_final_model(result["model"], cfg, Path(d) / "final", stream=result["stream"])
        (Path(d) / "figures.json").write_text(json.dumps({**last, **figures}))
        tune.report({**last, **figures, "train_s": train_s, "judged": 1, "device": "cpu",
                     "generator_wait_s": feed.wait_s},
                    checkpoint=tune.Checkpoint.from_directory(d))


def to_tune_space(space: dict):
    from ray import tune

    make = {"choice": lambda v: tune.choice(v), "loguniform": tune.loguniform, "uniform": tune.uniform,
            "randint": tune.randint}
    return {k: make[kind](*args) for k, (kind, *args) in space.items()}


def rows_from_results(results) -> list[dict]:
    """Every trial of a ResultGrid as a table row (sevi.evaluation.regressor_sweep.trial_row)."""
    from sevi.evaluation.regressor_sweep import mark_front, trial_id, trial_row

    # Tune's own trial states (TERMINATED also for a trial ASHA stopped; ERROR): anything else was cut
    # off by an interrupt, and the sweep is not finished.
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None) or []
    states = [t.status for t in trials] if len(trials) == len(results) else ["TERMINATED"] * len(results)
    rows = []
    for r, state in zip(results, states):
        trial = (trial_id(r.path) if r.path else None) or str((r.metrics or {}).get("trial_id", "?"))
        metrics = dict(r.metrics or {})
        err = None
        if r.error is not None:
            err = f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1] if str(r.error).strip() else ''}"
        rows.append(trial_row(trial, dict(r.config or {}), metrics, err, ended=state in ("TERMINATED", "ERROR")))
    return mark_front(sorted(rows, key=lambda r: r["trial"]))


def _record_path(storage: str, name: str) -> str:
    return os.path.join(storage, name + RECORD_SUFFIX)


def _earlier(storage: str, prefix: str, key: str) -> list[tuple[str, dict]]:
    import glob

    out = []
    for p in glob.glob(os.path.join(glob.escape(storage), glob.escape(prefix) + "*" + RECORD_SUFFIX)):
        if os.path.basename(p) == prefix + key + RECORD_SUFFIX:
            continue
        try:
            out.append((p, json.loads(Path(p).read_text())))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda pr: str(pr[1].get("started")), reverse=True)


def plan(args) -> dict:
    """What the command does with these inputs, decided without Ray: reuse a finished sweep, resume an
    interrupted one, or start a new one (recording its inputs first). Returns {"how": "reused" |
    "resume" | "new", "name", "record", "rec_path", "out", "table", "png", "line"}."""
    from ray_jobs.storage import is_uri, resolve_output
    from sevi.evaluation.regressor_sweep import differences, inputs_key, sweep_inputs
    from sevi.runtime.errors import InputError

    storage = resolve_output(args.storage_path, "--storage-path", "sevi_sweep")
    inputs = sweep_inputs(args.preset, args.sweep_preset, args.space_checked, args.base, args.held_out_seed)
    key = inputs_key(inputs)
    name = f"{args.name}-{key}"
    if args.out is None and is_uri(storage):
        raise InputError(f"--out: needed with a URI --storage-path ({storage}): the table and PNG are local files")
    out = Path(resolve_output(args.out, "--out", "sevi_sweep") if args.out else os.path.join(storage, name))
    rec_path = _record_path(storage, name) if not is_uri(storage) else str(out / (name + RECORD_SUFFIX))
    record = json.loads(Path(rec_path).read_text()) if os.path.exists(rec_path) else None
    if record is not None and record.get("inputs") != inputs:
        raise InputError(f"{rec_path}: records other inputs than its key says (edited by hand?); move it and its "
                         f"experiment aside to start again")
    res = {"name": name, "storage": storage, "record": record, "rec_path": rec_path, "out": out,
           "table": out / "trials.csv", "png": out / "pareto.png", "inputs": inputs}
    if record is not None and record.get("finished") and res["table"].exists():
        return {**res, "how": "reused",
                "line": f"sevi_sweep: inputs unchanged since sweep {name} finished; reused, nothing trained"}
    if record is not None:
        return {**res, "how": "resume", "line": f"sevi_sweep: resuming sweep {name} (same inputs as when it started)"}
    earlier = _earlier(storage, args.name + "-", key) if not is_uri(storage) else []
    why = (f"; inputs changed since {os.path.basename(earlier[0][0])[:-len(RECORD_SUFFIX)]} "
           f"({'; '.join(differences(earlier[0][1].get('inputs', {}), inputs))}), which is kept"
           if earlier else "")
    return {**res, "how": "new", "line": f"sevi_sweep: starting a new sweep {name}{why}"}


def run(argv=None) -> dict:
    """Parse, plan (reuse / resume / start), connect, sweep, write the table and the PNG. Returns
    {"rows", "how", "name", "out", "table", "png"}."""
    args = parse_args(argv)
    for k, v in {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(k, v)
    import dataclasses

    from sevi.evaluation.regressor_sweep import pareto_png, read_table, summary_lines, table_text
    from sevi.io.atomic import atomic_text

    preset = args.sweep_preset
    p = plan(args)
    name, storage, out, table, png, rec_path = p["name"], p["storage"], p["out"], p["table"], p["png"], p["rec_path"]
    print(p["line"])
    if p["how"] == "reused":
        rows = read_table(table.read_text())
        for line in summary_lines(rows):
            print(line)
        return {"rows": rows, "how": "reused", "name": name, "out": str(out), "table": str(table), "png": str(png)}
    record = p["record"]
    if record is None:
        record = {"inputs": p["inputs"], "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": False}
        os.makedirs(os.path.dirname(rec_path) or ".", exist_ok=True)
        atomic_text(rec_path, json.dumps(record, indent=1))  # before Tune starts: what the sweep began on

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ray_jobs.pool import ResourcesUnavailable, connect, ensure_pool, pool_spec, pool_stats, shortage
    from ray_jobs.pool import find_pool, wait_for_resources
    from sevi.evaluation.regressor_sweep import make_held_out
    from sevi.runtime.threads import apply_thread_policy

    if not ray.is_initialized():
        if args.address or os.environ.get("RAY_ADDRESS"):
            connect(args.address or os.environ["RAY_ADDRESS"], args.wait_s, "sevi_sweep")
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    from sevi.cli.policy import reinstall_signal_handlers

    reinstall_signal_handlers()  # ray.init put sys.exit(15) on SIGTERM
    spec = pool_spec(ray.cluster_resources(), args.pool)  # the one pool specification every job uses
    ensure_pool(spec, args.wait_s, log=lambda line: print(f"sevi_sweep: {line}"))
    trial_res = {"CPU": 1}
    if not wait_for_resources([trial_res], args.wait_s):
        raise ResourcesUnavailable(shortage("sevi_sweep", [trial_res], args.pool, pool_stats(find_pool(args.pool)),
                                            args.wait_s))
    apply_thread_policy(None, work="small")
    t0 = time.perf_counter()
    held = make_held_out(args.base, preset.held_out, preset.held_out_grid, args.held_out_seed,
                         preset.fit_max_iterations)
    print(f"sevi_sweep: {preset.held_out} held-out images at {preset.held_out_grid}^2 fitted from their truth in "
          f"{time.perf_counter() - t0:.1f} s")

    def trial(config, base, preset_d, held, pool_spec_d):
        trial_fn(config, base, preset_d, held, pool_spec_d, args.in_flight, args.wait_s)

    trial.__name__ = trial.__qualname__ = f"trial_{name.replace('-', '_')}"  # with_parameters keys on str(fn)
    fn = tune.with_parameters(trial, base=dataclasses.asdict(args.base), preset_d=dataclasses.asdict(preset),
                              held=held, pool_spec_d=dataclasses.asdict(spec))
    fn = tune.with_resources(fn, {"cpu": 1})
    path = os.path.join(storage, name)
    n_reports = -(-preset.steps // preset.eval_every) + 1  # validations, then the judged report

    def new_tuner():
        return tune.Tuner(
            fn, param_space=to_tune_space(args.space_checked),
            tune_config=tune.TuneConfig(
                metric="val_loss", mode="min", num_samples=preset.num_samples,
                max_concurrent_trials=preset.max_concurrent,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=n_reports,
                                        grace_period=min(preset.grace_period, n_reports),
                                        reduction_factor=preset.reduction_factor)),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))

    how = "started"
    tuner = None
    if tune.Tuner.can_restore(path):
        try:
            tuner = tune.Tuner.restore(path, fn, resume_unfinished=True, resume_errored=False)
            how = "resumed"
        except Exception as e:  # noqa: BLE001 - a state Tune cannot read back: start again
            how = f"restarted (the interrupted experiment could not be restored: {str(e).splitlines()[0][:160]})"
            from ray_jobs.storage import remove_dir

            remove_dir(path)
    try:
        grid = (tuner or new_tuner()).fit()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the sweep so far is kept in {path}; run the same command to resume it") from None
    if how == "resumed" and len(grid) != preset.num_samples:  # a state cut off mid-write (docs/ray.md)
        from ray_jobs.storage import remove_dir

        how = f"restarted (the resumed experiment held {len(grid)} of {preset.num_samples} trials)"
        remove_dir(path)
        grid = new_tuner().fit()
    if how != "started":
        print(f"sevi_sweep: sweep {name} {how}")
    rows = rows_from_results(grid)
    out.mkdir(parents=True, exist_ok=True)
    atomic_text(table, table_text(rows))
    pareto_png(rows, png, title=f"{name} ({args.preset} preset)")
    for line in summary_lines(rows):
        print(line)
    unfinished = sum(r["status"] == "unfinished" for r in rows)
    if unfinished:  # Tune returned after an interrupt: the record stays unfinished, so the command resumes
        raise KeyboardInterrupt(f"{unfinished} of {len(rows)} trials unfinished; the sweep so far is kept in {path} "
                                f"(table {table}); run the same command to resume it")
    atomic_text(rec_path, json.dumps({**record, "finished": True, "table": str(table), "png": str(png),
                                      "wall_s": round(time.perf_counter() - t0, 1)}, indent=1))
    print(f"sevi_sweep: {len(rows)} trials in {table}; Pareto front in {png}; "
          f"tensorboard --logdir {storage} shows the HParams view")
    return {"rows": rows, "how": how, "name": name, "out": str(out), "table": str(table), "png": str(png)}


def main(argv=None) -> int:
    """The job's entry point, under the project's one error policy (``sevi.cli.policy``): a bad option
    or search space (an unknown field, an empty range): one line and exit status 2; Ctrl-C or
    ``ray job stop``: one line, 130 or 143, and the same command resumes."""
    from sevi.cli.policy import run_command

    exiting = argv is None  # a process entry point: sevi.cli.policy.run_command
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("sevi_sweep", None, lambda: (run(argv), 0)[1], debug="--debug" in argv, exiting=exiting)


if __name__ == "__main__":
    sys.exit(main())
