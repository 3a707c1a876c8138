"""The faults users meet, tried through the commands' front doors and counted by class
(BENCHMARKS.md section 7).

    python tools/fault_cases.py [--only TEXT] [--skip-slow] [--json OUT.json] [--keep DIR] [--list]
    PYTHONPATH=DIR python tools/fault_cases.py ...     # the same cases on another checkout's code

(``git worktree add DIR 464c378`` and ``PYTHONPATH=DIR`` run them on the code before the round that
made the fault policy, in this checkout's environment; both module layouts are understood.)

Every case runs one command as a user would, in a subprocess of this interpreter (``python -m
sevi.cli.main``, ``python -m coating.cli.main``, ``python -m ray_jobs.sevi_train|coating_tune|pool``),
in a folder of its own with copies of its inputs: a bad option or input; image files as lab
software writes them; Ctrl-C (SIGINT to the process group, as a terminal sends it), SIGTERM or
``kill -9`` at a moment the case names (a temporary file appears, a part is written, the input is
open); a full disk (the output folder on a small tmpfs in a private mount namespace: a real
ENOSPC, ``unshare --mount``, skipped where that is not allowed); a read-only output folder; an
output on another file system; an input replaced with the same size and mtime (``cp -p``); a
killed Tune sweep run again. Each result falls in one class:

  clear         the expected end: a bad input or option ends in exit status 2 (a full disk 1, a
                signal 128 + its number) with one line naming what is wrong and no traceback; a
                valid input ends in exit 0 with the right result
  unclear       a non-zero exit without a traceback, but not one line naming the file or option
  refused       a valid input refused
  silent wrong  exit 0 with a wrong result, or bad input accepted
  lost          an input or a previous output changed or vanished
  debris        a temporary file left behind (and not cleaned up or reported by a later run)
  traceback     a Python traceback on stderr, or the process died of a signal (a segfault)
  hang          still running at the case's time limit

Cases whose moment never came (the command ended first) or that need what this machine lacks are
``skipped`` and not counted. The table (and ``--json``) gives the counts per group and the class of
every case. Inputs are made by the project's own commands and code in the checkout that runs.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

PY = sys.executable


def _layout() -> str:
    """The module layout of the code that runs (the one ``sevi`` is imported from: this checkout,
    or another put first on PYTHONPATH): "rooms" (``sevi/cli/main.py``, ``sevi/regressor/``), or
    "flat", as at commit 464c378, before the code was regrouped (``sevi/cli.py``, ``sevi/batches.py``)."""
    import importlib.util

    spec = importlib.util.find_spec("sevi")
    root = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    return "rooms" if root is None or (root / "cli" / "main.py").exists() else "flat"


LAYOUT = _layout()
# the same module under both layouts (the flat one only for measuring the code before the round)
MODULES = {"sevi.cli.main": "sevi.cli", "coating.cli.main": "coating.cli",
           "sevi.regressor.batches": "sevi.batches", "sevi.regressor.checkpoints": "sevi.checkpoints",
           "sevi.regressor.train_config": "sevi.train_config", "coating.line.schema": "coating.schema",
           "coating.models.fit_cycles": "coating.fit_cycles"}


def mod(name: str) -> str:
    return name if LAYOUT == "rooms" else MODULES[name]


SEVI = [PY, "-m", mod("sevi.cli.main")]
COATING = [PY, "-m", mod("coating.cli.main")]
TRAIN = [PY, "-m", "ray_jobs.sevi_train"]
TUNE = [PY, "-m", "ray_jobs.coating_tune"]
POOL = [PY, "-m", "ray_jobs.pool"]
CLASSES = ("clear", "unclear", "refused", "silent wrong", "lost", "debris", "traceback", "hang")
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
       "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
TMP = re.compile(r"^\..+\.(tmp|old)$")          # sevi.io.atomic's temporaries, any version
RAY_NOISE = re.compile(r"^(\d{4}-\d\d-\d\d[ T]|\[\d{4}-|\x1b\[|\(\w+ pid=|\s*$|\*\*\* SIGTERM)")


@dataclasses.dataclass
class Case:
    """One try. ``argv`` items may hold ``{d}`` (the case's folder, also its working directory)
    and ``{f}`` (the shared inputs). ``expect``: "error" (exit 2, or 1 for a write failure, with one
    line holding every ``words``), "fail" (exit 1), "ok" (exit 0; ``check`` says what is wrong, or
    None), "either" (a clear error, or exit 0 passing ``check``), "interrupt" (ended by the signal
    of ``trigger``: exit 128 + N, one line, no temporary). ``trigger``: (signal name, when) with
    when "glob:PATTERN" (a path under the case's folder exists), "open:NAME" (the process holds a
    file of that name open), "after:S". ``then``: a command run after the first (a kill -9's rerun),
    classed in its place. ``tmpfs``: (folder, size[, "ro"]) mounted over that folder of the case."""
    group: str
    name: str
    argv: list
    expect: str = "error"
    words: tuple = ()
    prepare: Callable | None = None
    check: Callable | None = None
    trigger: tuple | None = None
    then: list | None = None
    tmpfs: tuple | None = None
    mutable: tuple = ()
    between: Callable | None = None
    env: dict | None = None
    timeout: float = 120.0
    slow: bool = False


# -- inputs ---------------------------------------------------------------------------------------
def run_ok(argv, cwd, env=None):
    r = subprocess.run(argv, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"fault_cases: making inputs failed: {' '.join(map(str, argv))}\n{r.stderr[-2000:]}")
    return r


def child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(ENV)
    env.update(extra or {})
    return env


def make_inputs(f: Path) -> None:
    """The shared inputs, made once: a tiny model, count images, frames, a plant history, a
    standard, a grey-box registry and a runs file."""
    import h5py
    import numpy as np

    import importlib

    target_stats = importlib.import_module(mod("sevi.regressor.batches")).target_stats
    build_model = importlib.import_module(mod("sevi.regressor.checkpoints")).build_model
    save_final_model = importlib.import_module(mod("sevi.regressor.checkpoints")).save_final_model
    PRESETS = importlib.import_module(mod("sevi.regressor.train_config")).PRESETS

    cfg = PRESETS["tiny"]
    m = build_model(cfg)
    m.set_target_stats(*target_stats(cfg))
    save_final_model(m.eval(), cfg, f / "model")
    run_ok(SEVI + ["simulate", "--random", "3", "--grid", "32", "--electrons", "3000", "--device", "cpu",
                   "--out", "imgs.h5"], f)
    run_ok(SEVI + ["simulate", "--random", "40", "--grid", "64", "--electrons", "3000", "--device", "cpu",
                   "--out", "many.h5"], f)
    with h5py.File(f / "imgs.h5") as src:
        counts, ids = src["counts"][()], src["image_id"][()]
    np.save(f / "counts.npy", counts)
    np.save(f / "ids.npy", ids)
    run_ok(SEVI + ["predict", "--model", "model", "--images", "imgs.h5", "--out", "answer_ref.h5", "--no-refine",
                   "--device", "cpu"], f)
    for name, seed in (("frames.h5", 3), ("frames2.h5", 4)):
        run_ok(SEVI + ["simulate-frames", name, "--frames", "6", "--per-frame", "30", "--seed", str(seed),
                       "--device", "cpu"], f)
    # 40 frames for the signal cases, centroided one per part: after the first part there is work
    # left for the signal to interrupt (with 6, a fast box could end the command before it came)
    run_ok(SEVI + ["simulate-frames", "frames40.h5", "--frames", "40", "--per-frame", "30", "--seed", "5",
                   "--device", "cpu"], f)
    run_ok(SEVI + ["frames", "frames2.h5", "--out", "events2_ref.h5", "--chunk", "2", "--grid", "64", "--no-ray",
                   "--device", "cpu"], f)
    run_ok(COATING + ["simulate", "--cycles", "1", "--seed", "3", "--out", "H.csv", "--standard-out", "STD.csv"], f)
    run_ok([PY, "-c", f"from {mod('coating.line.schema')} import read_history; "
                      f"import {mod('coating.models.fit_cycles')} as fit_cycles; "
                      "fit_cycles.fit_all(read_history('H.csv'), 'models', kinds=('greybox',), log=lambda s: None, "
                      "hparams={'greybox': {'epochs': 1, 'inner_steps': 4, 'width': 0}})"], f)
    (f / "NEW.csv").write_text("furnace_no,cycle_id\nN1,1\nN2,1\nN3,1\n")
    # 12 runs: planning takes about 11 s here (3 runs: 5 s in all), so a signal sent after 4 s lands
    # while the command plans, not while the interpreter exits after its work is done.
    (f / "NEW12.csv").write_text("furnace_no,cycle_id\n" + "".join(f"N{i},1\n" for i in range(1, 13)))
    (f / "semi.csv").write_text((f / "H.csv").read_text().replace(",", ";"))
    (f / "text.h5").write_text("cycle_id,run\n1,2\n")
    (f / "folder.h5").mkdir()


def images_file(d: Path, f: Path, name: str, counts_dtype=None, ids_dtype=None, edit=None, ids=None,
                dataset="counts") -> None:
    """``d/name``: the shared 3 images in ``counts_dtype`` (image_id in ``ids_dtype``), edited."""
    import h5py
    import numpy as np

    c = np.load(f / "counts.npy")
    i = np.load(f / "ids.npy") if ids is None else np.asarray(ids)
    if edit is not None:
        c = edit(c)
    with h5py.File(d / name, "w") as h:
        h[dataset] = c if counts_dtype is None else c.astype(counts_dtype)
        if c.ndim == 3:
            h["image_id"] = i if ids_dtype is None else i.astype(ids_dtype)


def answer_matches(d: Path, f: Path, name="a.h5", ids=None) -> str | None:
    """None when ``d/name`` holds the reference Answer (and ImageIds ``ids`` when given)."""
    import h5py
    import numpy as np

    if not (d / name).exists():
        return f"no {name} written"
    with h5py.File(d / name) as a, h5py.File(f / "answer_ref.h5") as r:
        got, ref = a["Answer"][()], r["Answer"][()]
    if ids is not None:
        if got["ImageId"].tolist() != np.repeat(np.asarray(ids), 2).tolist():
            return f"ImageId {sorted(set(got['ImageId'].tolist()))}, expected {list(ids)}"
        ref = ref.copy()
        ref["ImageId"] = got["ImageId"]
    if got.dtype != ref.dtype or not all(np.array_equal(got[k], ref[k]) for k in ref.dtype.names):
        return "the Answer differs from the int32 file's"
    return None


def events_match(d: Path, f: Path, name: str, ref: str) -> str | None:
    import h5py
    import numpy as np

    if not (d / name).exists():
        return f"no {name} written"
    with h5py.File(d / name) as a, h5py.File(f / ref) as r:
        got, want = a["DetectedElectrons"][()], r["DetectedElectrons"][()]
    return None if np.array_equal(got, want) else (f"{len(got)} events, {len(want)} in an uninterrupted run "
                                                     f"on the same frames")


def replace_keep_time(src: Path, dst: Path) -> None:
    """``cp -p SRC DST`` with DST's old mtime: a replaced input of the same size and time."""
    st = dst.stat()
    shutil.copyfile(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- the cases ------------------------------------------------------------------------------------
def cases() -> list[Case]:
    import numpy as np

    c: list[Case] = []
    S = "sevi_train"
    train = TRAIN + ["--preset", "tiny", "--storage-path", "{d}/runs", "--num-cpus", "2"]
    for name, extra, words in [
        ("unknown preset", ["--preset", "nope"], ("nope",)),
        ("unknown field --warp-factor 9", ["--warp-factor", "9"], ("warp",)),
        ("--steps abc", ["--steps", "abc"], ("steps",)),
        ("--steps -5", ["--steps", "-5"], ("steps",)),
        ("--steps 0", ["--steps", "0"], ("steps",)),
        ("--electrons 5", ["--electrons", "5"], ("electrons",)),
        ("--electrons 4000,2000", ["--electrons", "4000,2000"], ("electrons",)),
        ("--spot-blur -0.1", ["--spot-blur", "-0.1"], ("spot_blur",)),
        ("--amp fp8", ["--amp", "fp8"], ("amp",)),
        ("--batch-size 0", ["--batch-size", "0"], ("batch_size",)),
        ("--lr -0.01", ["--lr", "-0.01"], ("lr",)),
        ("--num-workers -1", ["--num-workers", "-1"], ("num-workers",)),
        ("missing --init_from", ["--init_from", "{d}/nomodel"], ("nomodel",)),
        ("missing --refine_answer", ["--refine_answer", "{d}/noanswer.h5"], ("noanswer.h5",)),
        ("--lr nan", ["--lr", "nan"], ("lr",)),
        ("--in-flight 0", ["--in-flight", "0"], ("in-flight",)),
        ("--wait-s -1", ["--wait-s", "-1"], ("wait-s",)),
        ("--gpus-per-actor 1.5", ["--gpus-per-actor", "1.5"], ("gpus-per-actor",)),
        ("--address 127.0.0.1:1", ["--address", "127.0.0.1:1", "--wait-s", "20"], ("127.0.0.1:1",)),
        ("--warmup_steps -3", ["--warmup_steps", "-3"], ("warmup_steps",)),
    ]:
        argv = (TRAIN + ["--storage-path", "{d}/runs"] if name == "unknown preset" else train) + extra
        c.append(Case(S, name, argv, words=words, timeout=150))
    T = "coating_tune"
    tune = TUNE + ["--models", "{d}/m", "--storage-path", "{d}/runs", "--smoke-test", "--num-cpus", "2",
                   "--kinds", "greybox", "--num-samples", "1"]
    for name, extra, words in [
        ("missing --history", ["--history", "{d}/nope.csv"], ("nope.csv",)),
        ("text file named .h5", ["--history", "{f}/text.h5"], ("text.h5",)),
        ("semicolon export", ["--history", "{f}/semi.csv"], ("semi.csv",)),
        ("--cycles first", ["--history", "{f}/H.csv", "--cycles", "first"], ("--cycles",)),
        ("--num-samples 0", ["--history", "{f}/H.csv", "--num-samples", "0"], ("num-samples",)),
        ("--max-concurrent 0", ["--history", "{f}/H.csv", "--max-concurrent", "0"], ("max-concurrent",)),
        ("--models names a file", ["--history", "{f}/H.csv", "--models", "{f}/STD.csv"], ("STD.csv",)),
        ("--cycles 9 (no such cycle)", ["--history", "{f}/H.csv", "--cycles", "9"], ("9",)),
        ("--kinds model9", ["--history", "{f}/H.csv", "--kinds", "model9"], ("model9",)),
        ("--gpus-per-trial -1", ["--history", "{f}/H.csv", "--gpus-per-trial", "-1"], ("gpus-per-trial",)),
        ("--pretrain-runs 0", ["--history", "{f}/H.csv", "--kinds", "model1", "--pretrain-runs", "0"],
         ("pretrain-runs",)),
        ("--address 127.0.0.1:1", ["--history", "{f}/H.csv", "--address", "127.0.0.1:1", "--wait-s", "20"],
         ("127.0.0.1:1",)),
    ]:
        c.append(Case(T, name, tune + extra, words=words, timeout=150))
    P = "pool"
    c.append(Case(P, "inspect --address 127.0.0.1:1 --wait-s 20", POOL + ["inspect", "--address", "127.0.0.1:1",
                                                                           "--wait-s", "20"],
                  words=("127.0.0.1:1",), timeout=60))
    c.append(Case(P, "inspect, no cluster (or a running one)", POOL + ["inspect"], expect="either",
                  words=("cluster",), check=lambda d, f, r: None if ("actors" in r.out or "gen-" in r.out) else
                  "exit 0 without a listing", timeout=60))
    c.append(Case(P, "start --actors 0", POOL + ["start", "--actors", "0", "--address", "127.0.0.1:1"],
                  words=("actors",), timeout=60))
    c.append(Case(P, "inspect --wait-s -1", POOL + ["inspect", "--wait-s", "-1", "--address", "127.0.0.1:1"],
                  words=("wait-s",), timeout=60))

    # -- image files as lab software writes them ----------------------------------------------
    I = "predict: image files"
    predict = SEVI + ["predict", "--model", "{f}/model", "--images", "i.h5", "--out", "a.h5", "--no-refine",
                      "--device", "cpu"]
    for dt in ("<u1", "<i1", "<u2", "<i2", ">u2", "<u4", ">u4", ">i4", "<i8", ">i8", "<u8", ">u8", "<f2", "<f4",
               ">f4", "<f8", ">f8"):
        small = dt[1:] in ("u1", "i1")
        c.append(Case(I, f"counts {dt}", predict, expect="ok",
                      prepare=lambda d, f, dt=dt, small=small: images_file(
                          d, f, "i.h5", dt, edit=(lambda x: x.clip(0, 127)) if small else None),
                      check=(lambda d, f, r: None if (d / "a.h5").exists() else "no answer") if small else
                      (lambda d, f, r: answer_matches(d, f))))
    c.append(Case(I, "one 2-D image, >i2", predict, expect="ok",
                  prepare=lambda d, f: images_file(d, f, "i.h5", ">i2", edit=lambda x: x[0], dataset="image"),
                  check=lambda d, f, r: None if (d / "a.h5").exists() else "no answer"))
    for name, edit, dt, words in [
        ("fractions", lambda x: x + 0.5, "<f8", ("i.h5", "0.5")),
        ("negative counts (int16)", lambda x: x - 5, "<i2", ("i.h5", "-")),
        ("negative counts (float)", lambda x: x - 5.0, "<f4", ("i.h5", "-")),
        ("complex counts", lambda x: x.astype("c16"), None, ("i.h5", "complex")),
        ("zero images", lambda x: x[:0], None, ("i.h5",)),
        ("NaN counts", lambda x: x + float("nan"), "<f8", ("i.h5", "nan")),
        ("boolean counts", lambda x: x > 0, None, ("i.h5",)),
    ]:
        c.append(Case(I, name, predict, words=words,
                      prepare=lambda d, f, e=edit, t=dt, z=name == "zero images": images_file(
                          d, f, "i.h5", t, edit=e, ids=np.zeros(0, np.int32) if z else None)))
    for name, ids, dt, expect, words in [
        ("image_id int64 in range", [0, 1, 2**31 - 1], "<i8", "ok", ()),
        ("image_id big-endian int64 negative", [-5, 1, 7], ">i8", "ok", ()),
        ("image_id int64 beyond int32", [0, 1, 2**31 + 5], "<i8", "either", ("image_id", str(2**31 + 5))),
        ("image_id uint64 beyond int32", [0, 1, 2**33], "<u8", "either", ("image_id", str(2**33))),
        ("image_id floats", [0.0, 1.0, 2.0], "<f8", "error", ("image_id",)),
    ]:
        c.append(Case(I, name, predict, expect=expect, words=words,
                      prepare=lambda d, f, i=ids, t=dt: images_file(d, f, "i.h5", ids=np.array(i), ids_dtype=t),
                      check=lambda d, f, r, i=ids: answer_matches(d, f, ids=i)))
    c.append(Case(I, "no developer warnings on a refined run (uint16)", SEVI + [
        "predict", "--model", "{f}/model", "--images", "i.h5", "--out", "a.h5", "--device", "cpu"], expect="ok",
        prepare=lambda d, f: images_file(d, f, "i.h5", "<u2"),
        check=lambda d, f, r: "a developer warning reached the user: " + next(
            ln for ln in r.err.splitlines() if re.search(r"(Runtime|Deprecation|User|Future)Warning", ln))
        if re.search(r"(Runtime|Deprecation|User|Future)Warning", r.err) else None))

    # -- options out of range -----------------------------------------------------------------
    O = "options out of range"
    for name, argv, words in [
        ("simulate --grid 100000", SEVI + ["simulate", "--random", "1", "--grid", "100000", "--out", "o.h5",
                                           "--device", "cpu"], ("--grid",)),
        ("frames --grid 100000", SEVI + ["frames", "{f}/frames.h5", "--out", "e.h5", "--grid", "100000", "--no-ray",
                                         "--device", "cpu"], ("--grid",)),
        ("simulate --out a folder", SEVI + ["simulate", "--random", "1", "--grid", "8", "--out", "{f}/folder.h5",
                                            "--device", "cpu"], ("folder.h5",)),
        ("simulate-frames OUT a folder", SEVI + ["simulate-frames", "{f}/folder.h5", "--frames", "1"],
         ("folder.h5",)),
        ("frames --out a folder", SEVI + ["frames", "{f}/frames.h5", "--out", "{f}/folder.h5", "--no-ray"],
         ("folder.h5",)),
        ("predict --out a folder", SEVI + ["predict", "--model", "{f}/model", "--images", "{f}/imgs.h5", "--out",
                                           "{f}/folder.h5"], ("folder.h5",)),
        ("analyze --out a folder", SEVI + ["analyze", "{f}/frames.h5", "--model", "{f}/model", "--out",
                                           "{f}/folder.h5", "--no-ray"], ("folder.h5",)),
        ("coating simulate --seed -1", COATING + ["simulate", "--cycles", "1", "--seed", "-1", "--out", "h.csv"],
         ("--seed",)),
        ("coating simulate --cycles 0", COATING + ["simulate", "--cycles", "0", "--seed", "1", "--out", "h.csv"],
         ("--cycles",)),
        ("simulate --grid 1", SEVI + ["simulate", "--random", "1", "--grid", "1", "--out", "o.h5"], ("--grid",)),
        ("simulate --batch 0", SEVI + ["simulate", "--random", "1", "--batch", "0", "--out", "o.h5"], ("--batch",)),
        ("simulate --electrons -5", SEVI + ["simulate", "--random", "1", "--electrons", "-5", "--out", "o.h5"],
         ("--electrons",)),
        ("frames --chunk -1", SEVI + ["frames", "{f}/frames.h5", "--out", "e.h5", "--chunk", "-1", "--no-ray"],
         ("--chunk",)),
        ("simulate-frames --frames -1", SEVI + ["simulate-frames", "o.h5", "--frames", "-1"], ("--frames",)),
        ("predict --batch 0", SEVI + ["predict", "--model", "{f}/model", "--images", "{f}/imgs.h5", "--out", "a.h5",
                                      "--batch", "0"], ("--batch",)),
        ("train --steps 0", SEVI + ["train", "--preset", "tiny", "--out", "t", "--steps", "0"], ("steps",)),
        ("train --lr -1", SEVI + ["train", "--preset", "tiny", "--out", "t", "--lr", "-1"], ("lr",)),
    ]:
        c.append(Case(O, name, argv, words=words))

    # -- signals: Ctrl-C, SIGTERM -------------------------------------------------------------
    G = "Ctrl-C and SIGTERM"
    sim = SEVI + ["simulate", "--random", "40", "--grid", "256", "--electrons", "200000", "--batch", "1",
                  "--device", "cpu", "--out", "o.h5"]
    c.append(Case(G, "sevi simulate, Ctrl-C mid-write", sim, "interrupt", trigger=("SIGINT", "glob:.o.h5.*.tmp")))
    c.append(Case(G, "sevi simulate, SIGTERM mid-write", sim, "interrupt", trigger=("SIGTERM", "glob:.o.h5.*.tmp")))
    c.append(Case(G, "sevi simulate, SIGHUP mid-write", sim, "interrupt", trigger=("SIGHUP", "glob:.o.h5.*.tmp")))
    simf = SEVI + ["simulate-frames", "o.h5", "--frames", "40", "--batch", "1", "--device", "cpu"]
    c.append(Case(G, "sevi simulate-frames, Ctrl-C mid-write", simf, "interrupt",
                  trigger=("SIGINT", "glob:.o.h5.*.tmp")))
    fr = SEVI + ["frames", "{f}/frames40.h5", "--out", "e.h5", "--chunk", "1", "--grid", "64", "--no-ray",
                 "--device", "cpu"]
    c.append(Case(G, "sevi frames, Ctrl-C after a part", fr, "interrupt",
                  trigger=("SIGINT", "glob:e.h5.parts/chunk_*.h5"), mutable=("e.h5.parts/*",)))
    c.append(Case(G, "sevi frames, SIGTERM after a part", fr, "interrupt",
                  trigger=("SIGTERM", "glob:e.h5.parts/chunk_*.h5"), mutable=("e.h5.parts/*",)))
    an = SEVI + ["analyze", "{f}/frames40.h5", "--model", "{f}/model", "--out", "a.h5", "--path", "events", "--chunk",
                 "1", "--no-ray", "--device", "cpu"]
    c.append(Case(G, "sevi analyze, Ctrl-C while centroiding", an, "interrupt",
                  trigger=("SIGINT", "glob:a.events.h5.parts/chunk_*.h5"), mutable=("a.events.h5.parts/*",)))
    pr = SEVI + ["predict", "--model", "{f}/model", "--images", "{f}/many.h5", "--out", "a.h5", "--device", "cpu"]
    c.append(Case(G, "sevi predict, Ctrl-C while fitting", pr, "interrupt", trigger=("SIGINT", "open:many.h5+2")))
    c.append(Case(G, "sevi predict, SIGTERM while fitting", pr, "interrupt", trigger=("SIGTERM", "open:many.h5+2")))
    rec = COATING + ["recommend", "--history", "{f}/H.csv", "--runs", "{f}/NEW.csv", "--standard", "{f}/STD.csv",
                     "--models", "{f}/models", "--out", "OUT"]
    rec12 = [a.replace("NEW.csv", "NEW12.csv") for a in rec]
    c.append(Case(G, "coating recommend, Ctrl-C while planning", rec12, "interrupt", trigger=("SIGINT", "after:4")))
    c.append(Case(G, "coating recommend, SIGTERM while planning", rec12, "interrupt", trigger=("SIGTERM", "after:4")))
    c.append(Case(G, "coating simulate, Ctrl-C", COATING + ["simulate", "--cycles", "60", "--seed", "1", "--out",
                                                            "h.h5"], "interrupt", trigger=("SIGINT", "after:3")))
    tr = SEVI + ["train", "--preset", "tiny", "--out", "t", "--steps", "400", "--checkpoint_every", "10"]
    c.append(Case(G, "sevi train, Ctrl-C after a checkpoint", tr, "interrupt",
                  trigger=("SIGINT", "glob:t/checkpoints/checkpoint_*/model.pt")))
    job = TRAIN + ["--preset", "tiny", "--steps", "400", "--checkpoint_every", "10", "--no-pool", "--num-workers",
                   "1", "--storage-path", "{d}/runs", "--num-cpus", "2"]
    c.append(Case(G, "ray_jobs.sevi_train, Ctrl-C after a checkpoint", job, "interrupt", slow=True,
                  trigger=("SIGINT", "glob:runs/sevi-tiny/checkpoint_*"), timeout=240, mutable=("runs/*",)))
    c.append(Case(G, "ray_jobs.sevi_train, SIGTERM (ray job stop)", job, "interrupt", slow=True,
                  trigger=("SIGTERM", "glob:runs/sevi-tiny/checkpoint_*"), timeout=240, mutable=("runs/*",)))
    sweep = tune + ["--history", "{f}/H.csv", "--num-samples", "4"]
    c.append(Case(G, "ray_jobs.coating_tune, Ctrl-C mid-sweep", sweep, "interrupt", slow=True,
                  trigger=("SIGINT", "glob:runs/coating-tune-*/trial_*/"), timeout=240, mutable=("runs/*", "m/*")))
    c.append(Case(G, "ray_jobs.coating_tune, SIGTERM mid-sweep", sweep, "interrupt", slow=True,
                  trigger=("SIGTERM", "glob:runs/coating-tune-*/trial_*/"), timeout=240, mutable=("runs/*", "m/*")))

    # -- a full disk (ENOSPC), read-only and other file systems ---------------------------------
    D = "full disk, read-only, other file system"
    prev = lambda name: (lambda d, f: ((d / "out").mkdir(), (d / "out" / name).write_bytes(b"previous output")))  # noqa: E731
    c.append(Case(D, "sevi simulate, disk full", SEVI + ["simulate", "--random", "2", "--grid", "128", "--device",
                                                          "cpu", "--out", "out/o.h5"], "fail", ("o.h5", "space"),
                  prepare=prev("o.h5"), tmpfs=("out", "64k")))
    c.append(Case(D, "sevi simulate-frames, disk full", SEVI + ["simulate-frames", "out/o.h5", "--frames", "2",
                                                                 "--device", "cpu"], "fail", ("o.h5", "space"),
                  prepare=prev("o.h5"), tmpfs=("out", "512k")))
    c.append(Case(D, "sevi frames, disk full", SEVI + ["frames", "{f}/frames.h5", "--out", "out/e.h5", "--chunk",
                                                        "2", "--grid", "64", "--no-ray", "--device", "cpu"],
                  "fail", ("e.h5", "space"), prepare=prev("e.h5"), tmpfs=("out", "32k")))
    c.append(Case(D, "sevi predict, disk full", SEVI + ["predict", "--model", "{f}/model", "--images", "{f}/imgs.h5",
                                                         "--out", "out/a.h5", "--no-refine", "--device", "cpu"],
                  "fail", ("a.h5", "space"), prepare=prev("a.h5"), tmpfs=("out", "8k")))
    c.append(Case(D, "coating simulate .h5, disk full", COATING + ["simulate", "--cycles", "3", "--seed", "1",
                                                                    "--out", "out/h.h5"], "fail", ("h.h5", "space"),
                  prepare=prev("h.h5"), tmpfs=("out", "8k")))
    c.append(Case(D, "coating simulate .csv, disk full", COATING + ["simulate", "--cycles", "3", "--seed", "1",
                                                                     "--out", "out/h.csv"], "fail", ("h.csv", "space"),
                  prepare=prev("h.csv"), tmpfs=("out", "4k")))
    c.append(Case(D, "sevi simulate, read-only folder", SEVI + ["simulate", "--random", "1", "--grid", "8",
                                                                 "--device", "cpu", "--out", "out/o.h5"], "error",
                  ("o.h5",), prepare=lambda d, f: (d / "out").mkdir(), tmpfs=("out", "64k", "ro")))
    c.append(Case(D, "coating recommend, read-only folder", rec[:-1] + ["out/OUT"], "error", ("OUT",),
                  prepare=lambda d, f: (d / "out").mkdir(), tmpfs=("out", "64k", "ro")))
    c.append(Case(D, "sevi predict, output on another file system", SEVI + [
        "predict", "--model", "{f}/model", "--images", "{f}/imgs.h5", "--out", "out/a.h5", "--no-refine",
        "--device", "cpu"], "ok", prepare=lambda d, f: (d / "out").mkdir(), tmpfs=("out", "16m"),
        check=lambda d, f, r: answer_matches(d / "out", f)))

    # -- a killed process's temporaries -------------------------------------------------------
    K = "kill -9, then run again"
    small = SEVI + ["simulate", "--random", "1", "--grid", "16", "--electrons", "1000", "--device", "cpu",
                    "--out", "o.h5"]
    c.append(Case(K, "sevi simulate killed mid-write, run again", sim, "ok", then=small,
                  trigger=("SIGKILL", "glob:.o.h5.*.tmp"), check=lambda d, f, r: None if (d / "o.h5").exists()
                  else "no output"))
    c.append(Case(K, "sevi frames killed mid-part, run again", fr, "ok", then=fr,
                  trigger=("SIGKILL", "glob:e.h5.parts/.chunk_*.tmp"), mutable=("e.h5.parts/*",),
                  check=lambda d, f, r: None if (d / "e.h5").exists() else "no output"))
    c.append(Case(K, "coating_tune driver killed mid-sweep, run again", tune + ["--history", "{f}/H.csv",
                                                                               "--num-samples", "4"],
                  "ok", then=tune + ["--history", "{f}/H.csv", "--num-samples", "4"], slow=True, timeout=300,
                  trigger=("SIGKILL", "glob:runs/coating-tune-*/trial_*/"), mutable=("runs/*", "m/*"),
                  check=lambda d, f, r: None if (d / "m" / "tune_summary.csv").exists() else "no models written"))

    # -- a replaced input (cp -p) -------------------------------------------------------------
    R = "replaced input"
    frx = SEVI + ["frames", "x.h5", "--out", "e.h5", "--chunk", "2", "--grid", "64", "--no-ray", "--device", "cpu"]
    c.append(Case(R, "sevi frames resumed after cp -p of other frames (same size and mtime)", frx, "ok",
                  prepare=lambda d, f: shutil.copy2(f / "frames.h5", d / "x.h5"),
                  trigger=("SIGINT", "glob:e.h5.parts/chunk_*.h5"),
                  between=lambda d, f: replace_keep_time(f / "frames2.h5", d / "x.h5"),
                  then=frx, mutable=("e.h5.parts/*", "x.h5"),
                  check=lambda d, f, r: events_match(d, f, "e.h5", "events2_ref.h5")))
    return c


# -- running one case -----------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    rc: int | None
    out: str
    err: str
    seconds: float
    fired: bool = True
    hung: bool = False
    files_after: dict | None = None     # path -> sha256 of the case folder after (tmpfs cases)


def digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p.relative_to(root))] = "unreadable"
    return out


def _open_files(pid: int) -> list[str]:
    names = []
    for proc in [pid] + _children(pid):
        try:
            for fd in os.listdir(f"/proc/{proc}/fd"):
                try:
                    names.append(os.readlink(f"/proc/{proc}/fd/{fd}"))
                except OSError:
                    pass
        except OSError:
            pass
    return names


def _children(pid: int) -> list[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _terminal_signals() -> None:
    """(In the child, before exec.) The signal dispositions of a command typed at a terminal: this
    tool may itself run under ``nohup`` (SIGHUP ignored) or in a shell's background (SIGINT
    ignored), which its children would inherit, and a command rightly keeps an ignored signal
    ignored: SIGHUP's case then measured nohup, not the command."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def run_argv(argv: list[str], cwd: Path, env: dict, timeout: float, trigger: tuple | None) -> Result:
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=_terminal_signals)
    fired = threading.Event()

    def watch():
        sig, when = trigger
        kind, _, what = when.partition(":")
        delay = 0.0
        if kind == "open" and "+" in what:
            what, delay = what.split("+")[0], float(what.split("+")[1])
        while p.poll() is None:
            hit = (kind == "glob" and any(cwd.glob(what))) or \
                  (kind == "after" and time.monotonic() - t0 >= float(what)) or \
                  (kind == "open" and any(n.endswith("/" + what) for n in _open_files(p.pid)))
            if hit:
                time.sleep(delay)
                if p.poll() is not None:
                    return
                try:
                    if sig == "SIGINT":
                        os.killpg(p.pid, signal.SIGINT)     # Ctrl-C: the terminal signals the whole group
                    else:
                        os.kill(p.pid, getattr(signal, sig))
                except ProcessLookupError:
                    return
                fired.set()
                return
            time.sleep(0.02)

    if trigger:
        threading.Thread(target=watch, daemon=True).start()
    hung = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    if trigger and trigger[0] == "SIGKILL":  # what a killed process leaves: wait for its Ray children too
        for pid in _children(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return Result(p.returncode, out, err, time.monotonic() - t0, fired.is_set() or not trigger, hung)


def run_in_tmpfs(case: Case, d: Path, argv: list[str], env: dict) -> Result | None:
    """Run ``argv`` with ``d/<folder>`` on a tmpfs of the case's size, in a private mount namespace
    (this tool, re-run under ``unshare --mount``); None where that cannot be done here."""
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    spec = {"folder": str(d / case.tmpfs[0]), "size": case.tmpfs[1], "ro": len(case.tmpfs) > 2,
            "argv": argv, "cwd": str(d), "env": env, "timeout": case.timeout, "result": str(d.parent / (d.name + ".r"))}
    spec_path = d.parent / (d.name + ".spec.json")
    spec_path.write_text(json.dumps(spec))
    for pre in ([unshare, "--mount", "--propagation", "private"],
                [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        r = subprocess.run(pre + [PY, __file__, "--_in-tmpfs", str(spec_path)], capture_output=True, text=True,
                           timeout=case.timeout + 60, env=env)
        res = Path(spec["result"]) / "result.json"
        if r.returncode == 0 and res.exists():
            data = json.loads(res.read_text())
            if data.get("mounted"):
                after = Path(spec["result"]) / "after"
                if after.exists():  # the folder's content as the command left it, checked outside
                    shutil.rmtree(d / case.tmpfs[0], ignore_errors=True)
                    shutil.copytree(after, d / case.tmpfs[0], symlinks=True)
                return Result(data["rc"], data["out"], data["err"], data["seconds"], True, data["hung"],
                              data["files"])
    return None


def _inside_tmpfs(spec_path: str) -> int:
    """(In a private mount namespace.) Mount the tmpfs over the folder with the folder's files in
    it, run the command, copy what it left out, write result.json."""
    spec = json.loads(Path(spec_path).read_text())
    folder, result = Path(spec["folder"]), Path(spec["result"])
    result.mkdir(parents=True, exist_ok=True)
    saved = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    opts = f"size={spec['size']}"
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if m.returncode != 0:
        (result / "result.json").write_text(json.dumps({"mounted": False, "why": m.stderr}))
        return 0
    for rel, data in saved.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    if spec["ro"]:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    r = run_argv(spec["argv"], Path(spec["cwd"]), spec["env"], spec["timeout"], None)
    files = digest_tree(folder)
    shutil.rmtree(result / "after", ignore_errors=True)
    shutil.copytree(folder, result / "after", symlinks=True)
    (result / "result.json").write_text(json.dumps({"mounted": True, "rc": r.rc, "out": r.out, "err": r.err,
                                                    "seconds": r.seconds, "hung": r.hung, "files": files}))
    return 0


def message_lines(err: str) -> list[str]:
    """stderr without Ray's and tqdm's own log lines."""
    return [ln for ln in err.splitlines() if not RAY_NOISE.match(ln) and "\r" not in ln]


def clear_line(err: str, words: tuple) -> tuple[bool, str]:
    lines = message_lines(err)
    if not lines:
        return False, "nothing on stderr"
    last = lines[-1].strip()
    extra = [ln for ln in lines[:-1] if not ln.startswith(("usage:", " ")) and ": warning:" not in ln]
    missing = [w for w in words if w.lower() not in last.lower()]
    if missing:
        return False, f"the line lacks {missing}: {last[:200]}"
    if extra:
        return False, f"{len(extra) + 1} lines: {' | '.join(x[:80] for x in extra[:3])} | {last[:120]}"
    return True, last[:200]


def classify(case: Case, r: Result, before: dict, after: dict, debris: list[str]) -> tuple[str, str]:
    if r.hung:
        return "hang", f"still running after {case.timeout:.0f} s"
    mine = message_lines(r.err)  # the command's own lines: not Ray's logs of its workers and actors
    if any(ln.startswith(("Traceback (most recent call last)", "Fatal Python error")) for ln in mine):
        tb = [ln for ln in mine if ln and not ln.startswith(" ")]
        return "traceback", (tb[-1] if tb else "traceback")[:200]
    sig = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
    ours = case.trigger and case.then is None and r.rc == -getattr(signal, case.trigger[0])
    if r.rc is not None and r.rc < 0 and not ours:
        return "traceback", f"killed by signal {-r.rc} ({signal.Signals(-r.rc).name})"
    changed = [k for k, v in before.items() if after.get(k) != v
               and not any(Path(k).match(m) for m in case.mutable)]
    if changed:
        return "lost", f"changed or gone: {', '.join(changed[:4])}"
    ok_check = (lambda: case.check(r.dir, r.f, r)) if case.check else (lambda: None)
    if case.expect == "interrupt":
        want = sig[getattr(signal, case.trigger[0])]
        good, line = clear_line(r.err, ("interrupted",))
        if r.rc == 0:
            return "silent wrong", "exit 0 after the signal"
        if debris:
            return "debris", f"left {', '.join(debris[:3])}"
        if ours:  # the signal's default action: the process just died, without a word
            return "unclear", f"ended by {case.trigger[0]} without a line (exit {r.rc})"
        if r.rc != want or not good:
            return "unclear", f"exit {r.rc} (want {want}); {line}"
        return "clear", line
    if case.expect in ("ok", "either") and r.rc == 0:
        problem = ok_check()
        if problem:
            return "silent wrong", problem
        if debris:
            return "debris", f"left {', '.join(debris[:3])}"
        return "clear", "accepted, result right"
    if case.expect == "ok":
        good, line = clear_line(r.err, ())
        return "refused", f"exit {r.rc}: {line}"
    if r.rc == 0:
        return "silent wrong", "exit 0 on bad input" + (f": {r.out.strip().splitlines()[-1][:120]}" if r.out.strip()
                                                        else "")
    if debris:
        return "debris", f"left {', '.join(debris[:3])}"
    good, line = clear_line(r.err, tuple(w.format(d=r.dir, f=r.f) for w in case.words))
    want = (1,) if case.expect == "fail" else (2, 1)
    if r.rc not in want or not good:
        return "unclear", f"exit {r.rc}; {line}"
    return "clear", line


def run_case(case: Case, work: Path, f: Path, i: int) -> dict:
    d = work / f"c{i:03d}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if case.prepare:
        case.prepare(d, f)
    fmt = lambda argv: [str(a).format(d=d, f=f) for a in argv]  # noqa: E731
    env = child_env(case.env)
    before = {**{"d/" + k: v for k, v in digest_tree(d).items()}, **{"f/" + k: v for k, v in F_DIGEST.items()}}
    if case.tmpfs:
        r = run_in_tmpfs(case, d, fmt(case.argv), env)
        if r is None:
            return {"group": case.group, "case": case.name, "class": "skipped",
                    "detail": "no private tmpfs here (unshare --mount not allowed)"}
    else:
        r = run_argv(fmt(case.argv), d, env, case.timeout, case.trigger)
        if case.trigger and not r.fired and not r.hung:
            return {"group": case.group, "case": case.name, "class": "skipped",
                    "detail": f"the command ended before {case.trigger[1]} ({r.seconds:.1f} s, exit {r.rc})"}
        if case.then:
            if case.between:
                case.between(d, f)
            r = run_argv(fmt(case.then), d, env, case.timeout, None)
    r.dir, r.f = d, f
    after = {**{"d/" + k: v for k, v in digest_tree(d).items()}, **{"f/" + k: v for k, v in digest_tree(f).items()}}
    debris = [str(p.relative_to(d)) for p in d.rglob(".*") if TMP.match(p.name)]
    if case.then and debris:
        # a later run may leave another's temporary only when it says so
        debris = [x for x in debris if Path(x).name not in r.err]
    cls, detail = classify(case, r, before, after, debris)
    return {"group": case.group, "case": case.name, "class": cls, "detail": detail, "exit": r.rc,
            "seconds": round(r.seconds, 1)}


F_DIGEST: dict = {}


def table(rows: list[dict]) -> str:
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lines = ["| group | cases | " + " | ".join(CLASSES) + " | skipped |", "|---|---|" + "---|" * (len(CLASSES) + 1)]
    total = collections.Counter()
    for g in groups + ["all"]:
        cnt = collections.Counter(r["class"] for r in rows if g == "all" or r["group"] == g)
        if g != "all":
            total.update(cnt)
        n = sum(v for k, v in cnt.items() if k != "skipped")
        lines.append(f"| {'**all**' if g == 'all' else g} | {n} | " + " | ".join(str(cnt.get(c, 0)) for c in CLASSES)
                     + f" | {cnt.get('skipped', 0)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run only cases whose group or name contains this text "
                                                 "(or one of several, separated by '|')")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the cases that run Ray Train or Tune")
    ap.add_argument("--json", default=None, help="also write every case's result here")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--_in-tmpfs", dest="in_tmpfs", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.in_tmpfs:
        return _inside_tmpfs(a.in_tmpfs)
    todo = [c for c in cases() if (not a.only or any(t in c.group or t in c.name for t in a.only.split("|")))
            and not (a.skip_slow and c.slow)]
    if a.list:
        for c in todo:
            print(f"{c.group}: {c.name}")
        return 0
    work = Path(a.keep or tempfile.mkdtemp(prefix="fault-cases-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    f = work / "inputs"
    t0 = time.monotonic()
    try:
        if not (f / "done").exists():
            shutil.rmtree(f, ignore_errors=True)
            f.mkdir()
            make_inputs(f)
            (f / "done").write_text("")
        F_DIGEST.update(digest_tree(f))
        rows = []
        for i, c in enumerate(todo):
            row = run_case(c, work / "cases", f, i)
            rows.append(row)
            print(f"{row['class']:>12}  {c.group}: {c.name}: {row['detail']}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    import sevi

    print(f"\n{len(rows)} cases in {time.monotonic() - t0:.0f} s; code from {Path(sevi.__file__).parents[1]}")
    if a.json:
        Path(a.json).write_text(json.dumps({"code": str(Path(sevi.__file__).parents[1]), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
