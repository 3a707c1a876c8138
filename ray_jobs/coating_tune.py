"""Ray Tune: one sweep per cleaning cycle, all cycles at once, best model per cycle to the registry.

    python -m ray_jobs.coating_tune --history H.csv --models DIR [--cycles all|1,2] [--num-samples N]
        [--kinds greybox,model1,model2] [--name NAME] [--storage-path runs] [--gpus-per-trial F]

Why one Tuner per cycle (docs/ray.md): cycles' losses differ in scale, so one ASHA over a cycle
grid dimension would compare trials across cycles and cut the wrong ones. Each (cycle, kind) gets
its own Tuner, ASHA scheduler, search space (``coating.models.hparams.SEARCH_SPACE``) and unique name;
they run concurrently from ``num_cpus=0`` Ray tasks in this job. Validation is the latest runs of
each cycle (``coating.line.history_rows.time_split``), never a random split. model1 is pretrained on spectra
from the shared generator pool's "coating-spectra" recipe.

Re-running the same command resumes a sweep only when its inputs are the ones it started with
(``coating.models.sweep_inputs``: that cycle's own rows' content hash, cycle, kind, search space, sample
count), recorded beside it in ``<name>-cycle<C>-<kind>-<key>.inputs.json``; the key is part of
the experiment's name. Changed inputs (runs appended to a cycle) start a new sweep and say so;
a finished sweep on unchanged inputs whose model is still the registry's is reused without
starting Tune, so appending a new cycle's runs fits only the new cycle. Unfinished sweeps on
the same inputs resume (``Tuner.restore``); one whose state cannot be read back (its driver was
killed mid-write) is deleted and started again, and the job says which it did ("sweep ... resumed",
"restarted (why)"). Every trial logs to TensorBoard under ``<storage-path>/<name>``
(``tensorboard --logdir <storage-path>``). At the end a summary table per cycle is printed and
written to ``<models>/tune_summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from coating.models.pretraining import cycle_state

REPORT_EVERY = 10  # epochs between Tune reports (every report costs a round trip)


def to_tune_space(space: dict):
    """``coating.models.hparams.SEARCH_SPACE`` entries (plain data) -> ray.tune samplers."""
    from ray import tune

    make = {"loguniform": lambda lo, hi: tune.loguniform(lo, hi), "uniform": lambda lo, hi: tune.uniform(lo, hi),
            "randint": lambda lo, hi: tune.randint(lo, hi), "choice": lambda values: tune.choice(values)}
    out = {}
    for key, (kind, *args) in space.items():
        if kind not in make:
            raise ValueError(f"search space {key!r}: unknown sampler {kind!r}")
        out[key] = make[kind](*args)
    return out


def trainable(config: dict, kind: str, train_rows, val_rows, pretrain) -> None:
    """One trial: ``coating.models.fitting.fit`` with Tune's sampled hyperparameters."""
    import torch
    from ray import tune

    from coating.models.fitting import fit
    from sevi.runtime.threads import apply_thread_policy

    apply_thread_policy(None, work="small")  # one intra-op thread: many trials share a node (docs/ray.md)
    last = {}

    def report(epoch: int, metrics: dict) -> None:
        last.update(metrics)
        if epoch % REPORT_EVERY == 0:
            tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    result = fit(kind, config, train_rows, val_rows, report=report, pretrain=pretrain if kind == "model1" else None)
    with tempfile.TemporaryDirectory() as d:
        torch.save({"state_dict": result.model.state_dict(), "hparams": result.hparams}, Path(d) / "model.pt")
        tune.report({**{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}, "final": 1},
                    checkpoint=tune.Checkpoint.from_directory(d))


def plain_space(kind: str, smoke_test: bool) -> dict:
    """The search space of ``kind`` as plain data (``coating.models.hparams.SEARCH_SPACE``), with the
    smoke test's tiny epochs; recorded with the sweep's inputs."""
    from coating.models.hparams import SEARCH_SPACE

    space = dict(SEARCH_SPACE[kind])
    if smoke_test:
        space["epochs"] = ("choice", [20]) if kind != "greybox" else ("choice", [2])
    return space


def best_finished(results, name: str = "sweep"):
    """The trial of lowest final ``val_loss`` among those that finished with a checkpoint.

    Tune's ``get_best_result`` compares every trial's last report, so a trial ASHA stopped early
    (no checkpoint: only a finished trial saves its model) can win on a loss it reported at an
    early rung and leave nothing to load."""
    import math

    done = [r for r in results if r.error is None and r.checkpoint is not None
            and isinstance(r.metrics.get("val_loss"), (int, float)) and math.isfinite(r.metrics["val_loss"])]
    if not done:
        raise RuntimeError(f"coating_tune: {name}: no trial finished with a checkpoint and a finite val_loss")
    return min(done, key=lambda r: r.metrics["val_loss"])


def sweep_one(cycle_id: int, kind: str, history, args_dict: dict, pretrain, name: str) -> dict:
    """Run (or resume) the sweep of one (cycle, kind) as experiment ``name``; returns the best
    trial's summary (with the registry's ``model_sha256`` of the model it saved)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from coating.line.history_rows import time_split
    from coating.models.hparams import resolve_hparams

    train_rows, val_rows = time_split(history, cycle_id)
    storage = args_dict["storage_path"]
    def trial(config, train_rows, val_rows, pretrain):
        trainable(config, kind, train_rows, val_rows, pretrain)

    # with_parameters keys its object-store registry on str(function), and concurrent sweeps in
    # forked workers can share an address: a unique name keeps one sweep's data from another's.
    trial.__name__ = trial.__qualname__ = f"trial_{name.replace('-', '_')}"
    fn = tune.with_parameters(trial, train_rows=train_rows, val_rows=val_rows, pretrain=pretrain)
    fn = tune.with_resources(fn, {"cpu": 1, "gpu": args_dict["gpus_per_trial"]})
    path = os.path.join(storage, name)
    t0 = time.perf_counter()

    def new_tuner():
        space = to_tune_space(plain_space(kind, args_dict["smoke_test"]))
        max_t = 10**6  # ASHA's budget in reports; epochs vary per trial, so let them end on their own
        return tune.Tuner(
            fn, param_space=space,
            tune_config=tune.TuneConfig(metric="val_loss", mode="min", num_samples=args_dict["num_samples"],
                                        max_concurrent_trials=args_dict["max_concurrent"],
                                        scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                                                grace_period=3, reduction_factor=3)),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))

    # An interrupted sweep (its driver killed at any moment) is resumed where Tune can restore it;
    # where it cannot (a state file cut off mid-write, trials whose files were never written, so
    # no trial is left with a saved model), the experiment is deleted and the sweep started again.
    how = "started"
    tuner = None
    if tune.Tuner.can_restore(path):
        # Tune itself, given a state file cut off mid-write, "restarts" the experiment with one
        # trial of an empty config and no word of it: the state is checked before it is restored.
        why = unreadable_state(path)
        if why is None:
            try:
                tuner = tune.Tuner.restore(path, fn, resume_unfinished=True, resume_errored=True)
                how = "resumed"
            except Exception as e:  # noqa: BLE001 - whatever Tune cannot read back
                why = _short(e)
        if why is not None:
            how = f"restarted (the interrupted experiment could not be restored: {why})"
            storage_remove_dir(path)
    grid = (tuner or new_tuner()).fit()
    try:
        if how == "resumed" and len(grid) != args_dict["num_samples"]:
            raise RuntimeError(f"it held {len(grid)} of the sweep's {args_dict['num_samples']} trials")
        best = best_finished(grid, name)
    except RuntimeError as e:
        if how != "resumed":
            raise
        how = f"restarted (the resumed experiment was not the sweep: {_short(e)})"
        storage_remove_dir(path)
        grid = new_tuner().fit()
        best = best_finished(grid, name)
    wall = time.perf_counter() - t0
    import torch

    from coating.models import registry
    from coating.models.fitting import build_model_from_state

    with best.checkpoint.as_directory() as d:
        ck = torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=True)
    model = build_model_from_state(kind, ck["hparams"], ck["state_dict"])
    d = registry.save(args_dict["models"], cycle_id, kind, model, ck["hparams"], best.metrics, train_rows)
    meta = json.loads((d / "model.json").read_text())
    return {"cycle_id": cycle_id, "kind": kind, "trials": len(grid), "errors": len(grid.errors),
            "val_loss": best.metrics.get("val_loss"), "val_dE00": best.metrics.get("val_dE00"),
            "wall_s": round(wall, 1), "hparams": resolve_hparams(kind, ck["hparams"]), "path": best.path,
            "model_sha256": meta["model_sha256"], "fitted": True, "how": how}


def unreadable_state(path: str) -> str | None:
    """Why the newest ``experiment_state-*.json`` of the Tune experiment at ``path`` (a local
    path or a URI) cannot be read back, or None when it can."""
    import pyarrow.fs

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else \
            (pyarrow.fs.LocalFileSystem(), os.path.abspath(path))
        names = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(inner))
                       if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
        if not names:
            return "no experiment state file"
        with fs.open_input_stream(names[-1]) as f:
            state = json.loads(f.read().decode("utf-8"))
        if not isinstance(state, dict) or "trial_data" not in state:
            return f"{names[-1].rsplit('/', 1)[-1]} holds no trials"
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"{type(e).__name__}: {_short(e)}"
    return None


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def storage_remove_dir(path: str) -> None:
    """Delete an experiment folder (a local path or a URI)."""
    from ray_jobs.storage import remove_dir

    remove_dir(path)


# --- the sweeps' input records (the logic is coating.models.sweep_inputs; here only the storage I/O) ---
def _read_record(path: str):
    """The record at ``path`` (a local path or a URI), or None when there is none."""
    from coating.models.sweep_inputs import parse_record

    if "://" in path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(inner) as f:
            return parse_record(f.read().decode("utf-8"), path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return parse_record(f.read(), path)


def _write_record(path: str, text: str) -> None:
    if "://" in path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as f:  # one object, replaced whole
            f.write(text.encode("utf-8"))
        return
    from sevi.io.atomic import atomic_text

    atomic_text(path, text)


def _earlier_records(storage: str, prefix: str) -> list[tuple[str, dict]]:
    """(path, record) of the sweeps named ``prefix<key>``, newest first (local storage only: the
    message about changed inputs is a courtesy, not needed for correctness)."""
    import glob

    from coating.models.sweep_inputs import RECORD_SUFFIX

    if "://" in storage:
        return []
    out = []
    for p in glob.glob(os.path.join(glob.escape(storage), glob.escape(prefix) + "*" + RECORD_SUFFIX)):
        try:
            out.append((p, _read_record(p)))
        except ValueError:
            continue
    return sorted(out, key=lambda pr: str(pr[1].get("started")), reverse=True)


def plan_sweeps(history, cycles, kinds, args, log=print) -> tuple[list[dict], list[dict]]:
    """Decide per (cycle, kind): reuse a finished sweep on the same inputs, resume an unfinished
    one, or start a new one (recording its inputs first). Returns (reused summary rows, sweeps
    to run: dicts with cycle_id, kind, name, record path and record text)."""
    from coating.models.registry import stored_model_sha256
    from coating.models.sweep_inputs import (
        RECORD_SUFFIX,
        differences,
        inputs_key,
        record_text,
        reusable,
        sweep_inputs,
    )

    reused, todo = [], []
    for c in cycles:
        for k in kinds:
            extra = {"pretrain_runs": args.pretrain_runs} if k == "model1" else {}
            inputs = sweep_inputs(history, c, k, plain_space(k, args.smoke_test), args.num_samples, **extra)
            prefix = f"{args.name}-cycle{c}-{k}-"
            name = prefix + inputs_key(inputs)
            rec_path = os.path.join(args.storage_path, name + RECORD_SUFFIX)
            record = _read_record(rec_path)
            if record is not None and record["inputs"] != inputs:
                raise SystemExit(f"coating_tune: {rec_path}: records other inputs than its key says "
                                 f"(edited by hand?); move it and its experiment aside to start again")
            if reusable(record, inputs, stored_model_sha256(args.models, c, k)):
                log(f"cycle {c} {k}: inputs unchanged since sweep {name} finished; reused, not re-fitted")
                reused.append({**record["result"], "wall_s": 0.0, "fitted": False})
                continue
            if record is None:
                earlier = _earlier_records(args.storage_path, prefix)
                why = (f"; inputs changed since {os.path.basename(earlier[0][0])[:-len(RECORD_SUFFIX)]} "
                       f"({', '.join(differences(earlier[0][1]['inputs'], inputs))})" if earlier else "")
                log(f"cycle {c} {k}: starting a new sweep {name}{why}")
                text = record_text(inputs)
                _write_record(rec_path, text)      # before Tune starts: the record says what it began on
                started = json.loads(text)["started"]
            else:
                log(f"cycle {c} {k}: resuming sweep {name} (same inputs as when it started)")
                started = record.get("started")
            todo.append({"cycle_id": c, "kind": k, "name": name, "record_path": rec_path,
                         "inputs": inputs, "started": started, "resumed": record is not None})
    return reused, todo


def pretrain_batch(history, cycle_id: int, spec, n: int):
    """model1 pretraining spectra for a cycle, from the shared pool's coating-spectra recipe."""
    import numpy as np

    from ray_jobs.pool import PoolClient

    client = PoolClient.connect(spec)  # recreates the pool's actors if they exited (idle timeout)
    b = client.batch("coating-spectra", {"state": cycle_state(history, cycle_id), "batch": n}, seed=1000 + cycle_id)
    return {k: np.array(v) for k, v in b.items()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.coating_tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", required=True, help="plant history (.csv or .h5, coating.line.schema)")
    ap.add_argument("--models", required=True, help="model registry directory (one sub-folder per cycle)")
    ap.add_argument("--cycles", default="all", help="'all' or a comma list of cycle ids")
    ap.add_argument("--kinds", default="greybox,model1", help="model kinds to sweep (greybox, model1, model2)")
    ap.add_argument("--num-samples", type=int, default=8, help="trials per (cycle, kind)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="trials at once per sweep")
    ap.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional GPUs per trial (e.g. 0.25)")
    ap.add_argument("--name", default="coating-tune")
    ap.add_argument("--storage-path", default="runs")
    ap.add_argument("--pool", default="gen", help="shared generator pool (created if missing)")
    ap.add_argument("--pretrain-runs", type=int, default=512, help="pool spectra per cycle for model1 pretraining")
    ap.add_argument("--address", default=None, help="Ray address; default RAY_ADDRESS or a new local instance")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray instance")
    ap.add_argument("--wait-s", type=float, default=120.0,
                    help="longest wait for the pool and for one trial's resources before giving up with a reason")
    ap.add_argument("--smoke-test", action="store_true", help="tiny epochs (CI)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    args = ap.parse_args(argv)
    check_args(args)
    return args


def check_args(args) -> None:
    """Refuse an option out of range in one line (InputError), before anything is read or started."""
    import math

    from sevi.runtime.errors import InputError

    for bad, text in (
        (args.num_samples < 1, f"--num-samples: got {args.num_samples}; expected >= 1 trials per sweep"),
        (args.max_concurrent < 1, f"--max-concurrent: got {args.max_concurrent}; expected >= 1 trials at once"),
        (not args.gpus_per_trial >= 0, f"--gpus-per-trial: got {args.gpus_per_trial}; expected >= 0"),
        (args.pretrain_runs < 1, f"--pretrain-runs: got {args.pretrain_runs}; expected >= 1 spectra per cycle"),
        (not (args.wait_s >= 0 and math.isfinite(args.wait_s)),
         f"--wait-s: got {args.wait_s}; expected a finite number of seconds >= 0"),
        (args.num_cpus is not None and args.num_cpus < 1, f"--num-cpus: got {args.num_cpus}; expected >= 1"),
        (not args.name or "/" in args.name, f"--name: got {args.name!r}; expected a sweep name (no '/')"),
        (os.path.exists(args.models) and not os.path.isdir(args.models),
         f"--models {args.models}: is a file; expected the registry folder (made if missing)"),
    ):
        if bad:
            raise InputError(text)
    args.cycle_list = parse_cycles(args.cycles)


def parse_cycles(text: str) -> list[int] | None:
    """``all`` -> None; ``1,2`` -> [1, 2]; anything else is refused in one line."""
    from sevi.runtime.errors import InputError

    if text.strip() == "all":
        return None
    try:
        cycles = [int(c) for c in text.split(",")]
    except ValueError:
        cycles = []
    if not cycles:
        raise InputError(f"--cycles {text}: expected 'all' or a comma list of cycle ids (e.g. 1,2)")
    return cycles


def run(argv=None) -> list[dict]:
    args = parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    from coating.line.schema import read_history
    from coating.models.hparams import KINDS
    from ray_jobs.pool import (
        ResourcesUnavailable,
        connect,
        ensure_pool,
        find_pool,
        pool_spec,
        pool_stats,
        shortage,
        wait_for_resources,
    )

    history = read_history(args.history)  # validates every row before anything starts
    cycles = sorted(set(int(c) for c in history.cycle_id)) if args.cycle_list is None else args.cycle_list
    missing = set(cycles) - set(int(c) for c in history.cycle_id)
    if missing:
        raise SystemExit(f"coating_tune: {args.history}: no runs of cycle(s) {sorted(missing)}")
    kinds = [k.strip() for k in args.kinds.split(",")]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"coating_tune: unknown model kind(s) {bad}; choose from {KINDS}")
    # A URI stays a URI (Tune writes through pyarrow); a relative path in a submitted job is refused
    # (ray_jobs.storage). The registry is plain files: a directory, never a URI.
    from ray_jobs.storage import OutputPathError, is_uri, resolve_output

    args.storage_path = resolve_output(args.storage_path, "--storage-path", "coating_tune")
    if is_uri(args.models):
        raise OutputPathError(f"coating_tune: --models {args.models!r} must be a directory (the registry is plain "
                              f"files), not a URI")
    args.models = resolve_output(args.models, "--models", "coating_tune")
    if not ray.is_initialized():
        if args.address or os.environ.get("RAY_ADDRESS"):
            connect(args.address or os.environ["RAY_ADDRESS"], args.wait_s, "coating_tune")  # bounded: --wait-s
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    from sevi.cli.policy import reinstall_signal_handlers

    reinstall_signal_handlers()  # ray.init put sys.exit(15) on SIGTERM
    from coating.models.sweep_inputs import record_text

    reused, todo = plan_sweeps(history, cycles, kinds, args)
    pretrain = {}
    model1_cycles = sorted({s["cycle_id"] for s in todo if s["kind"] == "model1"})
    if model1_cycles:
        spec = pool_spec(ray.cluster_resources(), args.pool)  # the one pool specification every job uses
        ensure_pool(spec, args.wait_s, log=lambda line: print(f"coating_tune: {line}"))
        pretrain = {c: pretrain_batch(history, c, spec, args.pretrain_runs) for c in model1_cycles}
    trial = {"CPU": 1, "GPU": args.gpus_per_trial}  # what tune.with_resources asks for each trial
    if not wait_for_resources([trial], args.wait_s):  # Tune would leave its trials pending for ever
        raise ResourcesUnavailable(shortage("coating_tune", [trial], args.pool, pool_stats(find_pool(args.pool)),
                                            args.wait_s))
    a = {k: v for k, v in vars(args).items()}
    # Orchestration only (trials hold the resources), pinned to this driver's node: the registry
    # (--models) is a directory there, and a 0-CPU task could otherwise land on any node.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(sweep_one).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False))
    history_ref = ray.put(history) if todo else None
    refs = [task.remote(s["cycle_id"], s["kind"], history_ref, a, pretrain.get(s["cycle_id"]), s["name"])
            for s in todo]
    try:
        fitted = ray.get(refs)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP under sevi.cli.policy
        raise KeyboardInterrupt(f"the sweeps so far are kept in {args.storage_path}; run the same command to "
                                f"resume them") from None
    for s, row in zip(todo, fitted):  # finished: the record now says so, with the model it saved
        how = row.get("how", "started")
        if s["resumed"] and how == "started":
            how = "started again (the interrupted sweep had saved nothing to resume from)"
        if s["resumed"] or how != "started":  # say what became of an interrupted sweep
            print(f"coating_tune: cycle {s['cycle_id']} {s['kind']}: sweep {s['name']} {how}")
        _write_record(s["record_path"], record_text(s["inputs"], {k: v for k, v in row.items() if k != "how"},
                                                    started=s["started"]))
    rows = sorted(reused + fitted, key=lambda r: (r["cycle_id"], r["kind"]))
    write_summary(rows, Path(args.models) / "tune_summary.csv")
    return rows


def write_summary(rows: list[dict], path: Path) -> None:
    """The sweeps' summary as CSV, written atomically (sevi.io.atomic)."""
    import io

    from sevi.io.atomic import atomic_text

    cols = ["cycle_id", "kind", "trials", "errors", "val_loss", "val_dE00", "wall_s"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(cols + ["hparams"])
    for r in rows:
        w.writerow([r[c] for c in cols] + [r["hparams"]])
    atomic_text(path, buf.getvalue())


def main(argv=None) -> int:
    """The job's entry point, under the project's one error policy (``sevi.cli.policy``): a bad
    option or history, an output path the job cannot use, resources that cannot be had within
    ``--wait-s``: one line and exit status 2, whether run here or through ``ray job submit`` (then
    it is the job log's last line); Ctrl-C or ``ray job stop`` (SIGTERM): one line, 130 or 143."""
    from sevi.cli.policy import run_command

    exiting = argv is None  # a process entry point: sevi.cli.policy.run_command
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("coating_tune", None, lambda: _main(argv), debug="--debug" in argv, exiting=exiting)


def _main(argv) -> int:
    t0 = time.perf_counter()
    rows = run(argv)
    print(f"{'cycle':>6} {'kind':>8} {'trials':>6} {'errors':>6} {'val_loss':>10} {'val_dE00':>9} {'wall_s':>7} "
          f"{'fitted':>6}")
    for r in sorted(rows, key=lambda r: (r["cycle_id"], r["kind"])):
        print(f"{r['cycle_id']:>6} {r['kind']:>8} {r['trials']:>6} {r['errors']:>6} {r['val_loss']:>10.4g} "
              f"{(r['val_dE00'] if r['val_dE00'] is not None else float('nan')):>9.3f} {r['wall_s']:>7.1f} "
              f"{'yes' if r.get('fitted', True) else 'reused':>6}")
    print(f"all sweeps: {time.perf_counter() - t0:.1f} s; best models in the registry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
