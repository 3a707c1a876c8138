"""The regressor's architecture sweep, without Ray: the search space and budget of a sweep preset,
the key its inputs are recorded under, one trial's configuration, the held-out images every trial is
judged on, the judgement itself, and the table and Pareto front of all the trials.

``python -m ray_jobs.sevi_sweep`` runs it on Ray Tune; everything it decides or measures is here.

Search space (plain data, JSON-friendly; ``SweepPreset.space``, changed with ``--space``): a field
name and a sampler, ``["choice", [values]]``, ``["loguniform", low, high]``, ``["uniform", low,
high]`` or ``["randint", low, high]`` (high exclusive). Fields (``SEARCH_FIELDS``):

* ``blocks`` - BasicBlocks per ResNet stage, written "3-4-6-3" (ResNet34) or "1-1-1-1";
* ``width`` - the ResNet's base width;
* ``grid`` - the input resolution (the image is rebinned exactly to it; a divisor of the held-out
  grid);
* ``representation`` - "polar" or "fold" (``sevi.regressor.features``); a polar input has
  ``grid / 2`` radii and ``min(grid / 2, 32)`` angles unless ``n_r`` / ``n_theta`` are searched too;
* ``n_r``, ``n_theta`` - the polar samples;
* ``batch_size``, ``lr``.

A trial is judged on the same held-out images (drawn from the base preset's prior at seed
``10^9 + held_out_seed``, ``sevi.evaluation.held_out``), on what matters once the likelihood fit
takes the answer to the image's limit: the regressor's Distance, the fraction of images whose refined
answer lands in the optimum a fit started from the truth reaches (log posterior within 0.5, as
``tools/eval_refine.py`` and ``sevi.evaluation.frames_benchmark`` decide it), the refined Distance,
the fit's iterations, and the regressor's parameters, FLOPs per image and images/s on the trial's
device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from sevi.runtime.errors import InputError

SEARCH_FIELDS = ("blocks", "width", "grid", "representation", "n_r", "n_theta", "batch_size", "lr")
SAMPLERS = ("choice", "loguniform", "uniform", "randint")
LANDED_WINDOW = 0.5  # log-posterior units: the refined answer is in the truth-start fit's optimum
STATUSES = ("finished", "stopped early", "failed", "unfinished")


@dataclass(frozen=True)
class SweepPreset:
    """A sweep's budget and its default search space."""

    base: str  # the TrainConfig preset every trial starts from (sevi.regressor.train_config.PRESETS)
    space: dict  # field -> [sampler, *args] (module docstring)
    num_samples: int  # trials
    steps: int  # optimizer steps of a trial that is not stopped early
    eval_every: int  # steps between validations (ASHA's rungs)
    val_images: int  # validation images per trial (ASHA's loss)
    held_out: int  # held-out images every finished trial is judged on
    held_out_grid: int  # their grid (a multiple of every searched grid)
    max_concurrent: int = 1  # trials at once
    grace_period: int = 1  # ASHA: validations before a trial may be stopped
    reduction_factor: int = 2  # ASHA
    fit_max_iterations: int = 40  # the likelihood fit's iterations per start (sevi.fit.count_fit.FitConfig)
    note: str = ""

    def budget(self) -> dict:
        """What the sweep's budget is (recorded with its inputs)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("space", "note")}


SWEEP_PRESETS: dict[str, SweepPreset] = {
    # CI: seconds per trial on the tiny preset (16^2 / 32^2 fold inputs, 2,000-4,000 electrons per shell).
    "smoke": SweepPreset(
        base="tiny",
        space={"blocks": ["choice", ["1-1-1-1", "2-2-2-2"]], "width": ["choice", [4, 8]],
               "grid": ["choice", [16, 32]], "representation": ["choice", ["fold", "polar"]],
               "batch_size": ["choice", [4, 8]], "lr": ["loguniform", 1e-3, 1e-2]},
        num_samples=3, steps=8, eval_every=4, val_images=8, held_out=3, held_out_grid=32, max_concurrent=2,
        fit_max_iterations=10, note="CI smoke test"),
    # A 2-core CPU: the cpu-smoke preset's images (4e4-1.2e5 electrons per shell, read at 32^2 or 64^2),
    # ResNet depths from 1-1-1-1 to ResNet34, one trial at a time beside the pool's two actors.
    "cpu": SweepPreset(
        base="cpu-smoke",
        space={"blocks": ["choice", ["1-1-1-1", "2-2-2-2", "3-4-6-3"]], "width": ["choice", [8, 16, 24]],
               "grid": ["choice", [32, 64]], "representation": ["choice", ["polar", "fold"]],
               "batch_size": ["choice", [16, 32]], "lr": ["loguniform", 5e-4, 5e-3]},
        num_samples=10, steps=300, eval_every=75, val_images=64, held_out=32, held_out_grid=64,
        max_concurrent=1, note="2-core CPU"),
}


def parse_blocks(text) -> tuple[int, int, int, int]:
    """"3-4-6-3" (or a list of 4 ints) -> (3, 4, 6, 3); InputError otherwise."""
    try:
        parts = [int(b) for b in (text.split("-") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 4 or min(parts) < 1:
        raise InputError(f"blocks {text!r}: expected 4 stages of >= 1 BasicBlocks, e.g. '3-4-6-3' (ResNet34)")
    return tuple(parts)


def check_space(space: dict) -> dict:
    """The search space, checked: every field searchable, every sampler known, no empty range.
    Returns it as plain JSON data (lists). Raises InputError with one line."""
    import difflib

    if not isinstance(space, dict) or not space:
        raise InputError(f"search space: got {space!r}; expected an object of field: [sampler, ...]")
    out = {}
    for key, spec in space.items():
        if key not in SEARCH_FIELDS:
            close = difflib.get_close_matches(str(key), SEARCH_FIELDS, n=1)
            raise InputError(f"search space: unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; searchable: {', '.join(SEARCH_FIELDS)}")
        if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in SAMPLERS:
            raise InputError(f"search space: {key}: got {spec!r}; expected [sampler, ...] with sampler one of "
                             f"{', '.join(SAMPLERS)}")
        kind, args = spec[0], list(spec[1:])
        if kind == "choice":
            if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
                raise InputError(f"search space: {key}: empty range {spec!r}; expected ['choice', [v1, v2, ...]]")
            values = list(args[0])
            if key == "blocks":
                values = ["-".join(map(str, parse_blocks(v))) for v in values]
            out[key] = ["choice", values]
            continue
        if len(args) != 2 or not all(isinstance(a, (int, float)) and math.isfinite(a) for a in args):
            raise InputError(f"search space: {key}: got {spec!r}; expected ['{kind}', low, high]")
        lo, hi = args
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            raise InputError(f"search space: {key}: empty range {spec!r}; expected low < high"
                             + (" and low > 0" if kind == "loguniform" else ""))
        if key in ("blocks", "representation"):
            raise InputError(f"search space: {key}: takes ['choice', [...]], got {spec!r}")
        out[key] = [kind, lo, hi]
    return out


def load_space(text: str) -> dict:
    """``--space``: JSON text, or the path of a JSON file; InputError when it is neither."""
    import os

    src = text
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            src = f.read()
    try:
        return json.loads(src)
    except json.JSONDecodeError as e:
        raise InputError(f"--space: {text[:80]!r}: not JSON nor a JSON file ({e.msg} at {e.pos}); expected e.g. "
                         f"'{{\"width\": [\"choice\", [8, 16]]}}'") from None


def trial_config(base, sampled: dict, preset: SweepPreset):
    """The TrainConfig of one trial: the base preset with the sampled fields and the sweep's budget
    (steps, validations; a checkpoint at every validation). Polar inputs get ``grid / 2`` radii and
    ``min(grid / 2, 32)`` angles unless sampled. Raises InputError on a combination no config allows."""
    fields = {k: v for k, v in sampled.items() if k in SEARCH_FIELDS}
    if "blocks" in fields:
        fields["blocks"] = parse_blocks(fields["blocks"])
    grid = int(fields.get("grid", base.data.grid))
    if (fields.get("representation", base.data.representation) == "polar"
            and ("grid" in fields or "representation" in fields)):
        fields.setdefault("n_r", grid // 2)
        fields.setdefault("n_theta", min(grid // 2, 32))
    steps = preset.steps
    fields.update(steps=steps, eval_every=preset.eval_every, checkpoint_every=preset.eval_every,
                  val_images=preset.val_images, log_every=max(1, min(base.log_every, preset.eval_every)),
                  warmup_steps=min(base.warmup_steps, max(1, steps // 10)))
    if "lr" in fields:
        fields["lr"] = float(fields["lr"])
        fields["min_lr"] = min(base.min_lr, fields["lr"])
    try:
        return base.replace(**fields)
    except (ValueError, TypeError) as e:
        raise InputError(f"trial config {sampled}: {e}") from None


def check_values(space: dict, base, preset: SweepPreset) -> None:
    """Every value a trial can draw makes a valid config, each field tried on its own from the base
    (every choice; a range's two ends): a bad value is refused in one line before any trial runs,
    never found by every trial failing."""
    for key, (kind, *args) in space.items():
        values = args[0] if kind == "choice" else args
        for v in values:
            if key in ("width", "grid", "n_r", "n_theta", "batch_size") and kind == "choice" and \
                    not (isinstance(v, int) and not isinstance(v, bool)):
                raise InputError(f"search space: {key}: {v!r} is not a whole number")
            try:
                trial_config(base, {key: v}, preset)
            except InputError as e:
                why = str(e).split("}: ", 1)[-1]  # trial_config's "trial config {...}: <why>"
                raise InputError(f"search space: {key}: {v!r} makes no valid trial ({why})") from None


def check_grids(space: dict, base, held_out_grid: int) -> None:
    """Every grid the space can sample must divide the held-out grid (an exact rebinning)."""
    grids = space["grid"][1] if "grid" in space and space["grid"][0] == "choice" else \
        [base.data.grid] if "grid" not in space else None
    if grids is None:
        raise InputError(f"search space: grid: takes ['choice', [...]] (each must divide the held-out grid "
                         f"{held_out_grid}), got {space['grid']!r}")
    bad = [g for g in grids if not (isinstance(g, int) and g >= 4 and g % 2 == 0 and held_out_grid % g == 0)]
    if bad:
        raise InputError(f"search space: grid {bad}: expected even grids >= 4 that divide the held-out grid "
                         f"{held_out_grid}")


def sweep_inputs(preset_name: str, preset: SweepPreset, space: dict, base, held_out_seed: int) -> dict:
    """Everything the sweep's trials depend on: the space, the budget, the base config, the held-out
    images. Two sweeps with equal inputs are the same sweep (resume, reuse)."""
    return {"preset": preset_name, "space": space, "budget": preset.budget(),
            "base_config": json.loads(json.dumps(dataclasses.asdict(base), default=list)),
            "held_out": {"n": preset.held_out, "grid": preset.held_out_grid, "seed": held_out_seed}}


def inputs_key(inputs: dict) -> str:
    """A short digest of the inputs: part of the sweep's name, so changed inputs make a new sweep."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]


def differences(old: dict, new: dict) -> list[str]:
    """The top-level parts of two inputs that differ (and, for the space and budget, which entries)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            sub = sorted(s for s in set(a) | set(b) if a.get(s) != b.get(s))
            out.append(f"{k}: {', '.join(sub[:6])}")
        else:
            out.append(k)
    return out


# -- the held-out images and the judgement --------------------------------------------------------
@dataclass
class HeldOut:
    """The images every trial is judged on, and the fit started from each one's truth."""

    images: np.ndarray  # (n, G, G) int32 counts
    beta: np.ndarray  # (n, 2, L) truth
    R: np.ndarray  # (n, 2)
    sigma_R: np.ndarray  # (n, 2)
    truth_log_posterior: np.ndarray  # (n,) the fit from the truth
    truth_beta: np.ndarray  # (n, 2, L) its answer
    prior: object = field(repr=False, default=None)  # PriorConfig
    fit_max_iterations: int = 40


HELD_OUT_KINDS = ("prior", "overlapping")
OVERLAP = (0.004, 0.03)  # overlapping held-out shells: R2 - R1 uniform in this range (detector units)


def overlapping_params(params, seed: int):
    """The same draws with the outer shell moved to R1 + U(0.004, 0.03): shells that overlap
    (sevi.physics.metric.SEPARATION is 0.03), where a regressor's start matters most. R1 is kept
    inside [0.3, 0.87] so that both shells stay on the detector and R >= 10 sigma_R."""
    import torch

    from sevi.physics.prior import ShellParams

    rng = np.random.default_rng(seed)
    n = len(params)
    r1 = torch.as_tensor(rng.uniform(0.3, 0.9 - OVERLAP[1], n))
    R = torch.stack([r1, r1 + torch.as_tensor(rng.uniform(*OVERLAP, n))], dim=1).to(params.R.dtype)
    return ShellParams(R, params.sigma_R, params.beta, params.n_electrons)


def make_held_out(base, n: int, grid: int, seed: int, fit_max_iterations: int = 40, device="cpu",
                  kind: str = "prior") -> HeldOut:
    """n images from the base config's prior at seed 10^9 + seed, rendered at ``grid`` (ITM), each
    fitted once from its truth (the optimum a trial's refined answer should land in). ``kind``
    "overlapping": the same draws with overlapping shells (:func:`overlapping_params`)."""
    import torch

    from sevi.evaluation.held_out import HELD_OUT_OFFSET
    from sevi.fit.count_fit import FitConfig, Refiner
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.prior import Prior

    if kind not in HELD_OUT_KINDS:
        raise InputError(f"held-out kind {kind!r}: expected one of {', '.join(HELD_OUT_KINDS)}")
    pc = base.data.prior_config()
    params = Prior(pc)(n, HELD_OUT_OFFSET + seed).params
    if kind == "overlapping":
        params = overlapping_params(params, HELD_OUT_OFFSET + seed)
    gen = SeviGenerator(GeneratorConfig(grid=grid), device, pc)
    images = torch.cat([gen.render(params[s:s + 8], HELD_OUT_OFFSET + seed + s).images.cpu()
                        for s in range(0, n, 8)]).numpy().astype(np.int32)
    refiner = Refiner(FitConfig(fit_grid=grid, max_iterations=fit_max_iterations), pc, device)
    lp, tb = [], []
    for i in range(n):
        f = refiner(images[i], params.R[i].numpy(), params.sigma_R[i].numpy(), params.beta[i].numpy())
        lp.append(f.log_posterior)
        tb.append(f.beta)
    return HeldOut(images, params.beta.numpy(), params.R.numpy(), params.sigma_R.numpy(), np.array(lp),
                   np.stack(tb), pc, fit_max_iterations)


def resolved_fields(cfg) -> dict:
    """A trial config's searched fields as reported metrics (``cfg_<field>``, defaults included)."""
    return {"cfg_blocks": "-".join(map(str, cfg.blocks)), "cfg_width": cfg.width, "cfg_grid": cfg.data.grid,
            "cfg_representation": cfg.data.representation, "cfg_n_r": cfg.data.n_r, "cfg_n_theta": cfg.data.n_theta,
            "cfg_batch_size": cfg.data.batch_size, "cfg_lr": cfg.lr}


def count_flops(model, x) -> int:
    """FLOPs of one forward pass of ``x`` (torch's FlopCounterMode: convolutions and matrix products,
    2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was)
    return int(counter.get_total_flops())


def images_per_second(model, cfg, images: np.ndarray, batch: int = 32, min_s: float = 0.5) -> float:
    """Images/s of the regressor (features and forward pass, eval mode, no grad) on its device."""
    import torch

    dev = next(model.parameters()).device
    x = torch.as_tensor(np.array(images[np.arange(batch) % len(images)])).to(dev)
    feats = cfg.data.features
    model.eval()
    with torch.no_grad():
        model(feats(x[:2]))  # warm up
        n, t0 = 0, time.perf_counter()
        while True:
            model(feats(x))
            n += batch
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if time.perf_counter() - t0 >= min_s:
                break
    return n / (time.perf_counter() - t0)


def judge(model, cfg, held: HeldOut, device="cpu") -> dict:
    """A trained regressor's figures on the held-out images (module docstring)."""
    import torch

    from sevi.fit.count_fit import FitConfig, Refiner
    from sevi.physics.metric import distance
    from sevi.regressor.inference import predict_images

    model = model.to(device).eval()
    counts = np.array(held.images)  # writable: arrays from Ray's object store are not
    images = torch.as_tensor(counts)
    p = predict_images(model, cfg, [(0, images)], device)
    truth = torch.as_tensor(np.array(held.beta, dtype=np.float64))
    reg = distance(torch.as_tensor(p["beta"], dtype=torch.float64), truth).numpy()
    G = held.images.shape[-1]
    refiner = Refiner(FitConfig(fit_grid=G, max_iterations=held.fit_max_iterations), held.prior, device)
    refined, landed, iters, t0 = [], [], [], time.perf_counter()
    for i in range(len(held.images)):
        f = refiner(counts[i], p["R"][i], p["sigma_R"][i], p["beta"][i], p["R_sd"][i])
        refined.append(f.beta)
        landed.append(f.log_posterior >= held.truth_log_posterior[i] - LANDED_WINDOW)
        iters.append(f.iterations)
    fit_s = (time.perf_counter() - t0) / len(held.images)
    ref = distance(torch.as_tensor(np.stack(refined)), truth).numpy()
    x = cfg.data.features(images[:1].to(device))
    ips = images_per_second(model, cfg, counts)
    return {"regressor_distance": float(np.median(reg)), "regressor_distance_mean": float(np.mean(reg)),
            "landed_fraction": float(np.mean(landed)), "refined_distance": float(np.median(ref)),
            "fit_iterations": float(np.mean(iters)), "fit_s_per_image": fit_s,
            "parameters": int(sum(q.numel() for q in model.parameters())), "flops_per_image": count_flops(model, x),
            "images_per_s": ips, "latency_ms": 1000.0 / ips, "held_out": len(held.images)}


# -- the table and the Pareto front ---------------------------------------------------------------
CONFIG_COLUMNS = ("blocks", "width", "grid", "representation", "n_r", "n_theta", "batch_size", "lr")
FIGURE_COLUMNS = ("steps_done", "val_loss", "regressor_distance", "landed_fraction", "refined_distance",
                  "fit_iterations", "fit_s_per_image", "parameters", "flops_per_image", "images_per_s", "latency_ms",
                  "train_s")
COLUMNS = ("trial", "status", "reason") + CONFIG_COLUMNS + FIGURE_COLUMNS + ("on_front", "device")
# The front: land in the right optimum most often, with the best refined Distance, at the least cost.
FRONT_AGAINST = ("latency_ms", "parameters")


def trial_id(trial_dir: str) -> str | None:
    """The trial's id ("f79c7_00007") from its Tune folder's name ("trial_<sweep>_f79c7_00007_7_<config>_<date>"),
    or None when the name holds none."""
    import os
    import re

    found = re.search(r"_([0-9a-f]{5}_\d{5})", os.path.basename(str(trial_dir).rstrip("/")))
    return found.group(1) if found else None


def trial_row(trial: str, config: dict, metrics: dict, error: str | None, ended: bool = True) -> dict:
    """One trial's row: its sampled configuration, every figure it reached, and its status
    (finished: judged on the held-out images; stopped early: ASHA ended it; failed: ``error``;
    unfinished: not ``ended``, the sweep was interrupted before it ended)."""
    row = {c: "" for c in COLUMNS}
    row["trial"] = trial
    resolved = {k[4:]: v for k, v in metrics.items() if k.startswith("cfg_")}
    for c in CONFIG_COLUMNS:
        v = resolved.get(c, config.get(c, ""))
        row[c] = "-".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    for c in FIGURE_COLUMNS:
        v = metrics.get(c, "")
        row[c] = v if isinstance(v, (int, float, str)) else ""
    if error:
        row["status"], row["reason"] = "failed", " ".join(str(error).split())[:300]
    elif not ended:
        row["status"], row["reason"] = "unfinished", "the sweep was interrupted; the same command resumes it"
    elif metrics.get("judged"):
        row["status"] = "finished"
    else:
        row["status"] = "stopped early"
        row["reason"] = f"ASHA stopped it at step {metrics.get('steps_done', '?')} (val_loss {metrics.get('val_loss', '?')})"
    row["device"] = metrics.get("device", "")
    return row


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


REFINED_TIE = 0.02  # refined Distances within 2 % are the same answer (the fits reach the same optima)


def pareto_front(rows: list[dict], against: str, tie: float = REFINED_TIE) -> list[int]:
    """Indices of the finished rows no other finished row beats: landing fraction (higher), refined
    Distance (lower; within ``tie`` relative, equal) and ``against`` (lower) at least as good, one
    strictly better."""
    pts = [(i, _num(r["landed_fraction"]), _num(r["refined_distance"]), _num(r[against]))
           for i, r in enumerate(rows) if r["status"] == "finished"]
    pts = [p for p in pts if all(math.isfinite(v) for v in p[1:])]

    def beats(a, b):
        ge = a[1] >= b[1] and a[2] <= b[2] * (1 + tie) and a[3] <= b[3]
        return ge and (a[1] > b[1] or a[2] < b[2] * (1 - tie) or a[3] < b[3])

    return sorted(i for i, *_ in pts if not any(beats(q, (i, *_)) for q in pts))


def mark_front(rows: list[dict]) -> list[dict]:
    """``on_front`` of every row: which fronts (latency, parameters) it is on, '' if none."""
    fronts = {a: set(pareto_front(rows, a)) for a in FRONT_AGAINST}
    for i, r in enumerate(rows):
        r["on_front"] = "+".join(a.split("_")[0] for a in FRONT_AGAINST if i in fronts[a])
    return rows


def table_text(rows: list[dict]) -> str:
    """The trials as CSV text (every trial, whatever its status)."""
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})
    return buf.getvalue()


def read_table(text: str) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def label(row: dict) -> str:
    """A front member's name on the plot: trial, depth, width, input."""
    rep = str(row.get("representation", ""))[:1]
    return f"{row['trial']}: {row['blocks']} w{row['width']} {rep}{row['grid']} b{row['batch_size']}"


def summary_lines(rows: list[dict]) -> list[str]:
    """The table, printed: one line per trial, finished ones first, best landing first."""
    order = sorted(rows, key=lambda r: (STATUSES.index(r["status"]) if r["status"] in STATUSES else 9,
                                        -_num(r["landed_fraction"]) if math.isfinite(_num(r["landed_fraction"])) else 0,
                                        _num(r["refined_distance"]) if math.isfinite(_num(r["refined_distance"])) else 0))
    head = (f"{'trial':>12} {'status':>13} {'blocks':>8} {'w':>3} {'input':>7} {'bs':>3} {'lr':>8} {'val':>7} "
            f"{'reg D':>7} {'landed':>6} {'ref D':>7} {'iters':>5} {'params':>8} {'MFLOP':>7} {'img/s':>7} front")
    out = [head]
    for r in order:
        def f(c, fmt):
            v = _num(r[c])
            return format(v, fmt) if math.isfinite(v) else "-"
        out.append(f"{r['trial']:>12} {r['status']:>13} {r['blocks']:>8} {r['width']!s:>3} "
                   f"{str(r['representation'])[:5] + str(r['grid']):>7} {r['batch_size']!s:>3} {f('lr', '8.2g')} "
                   f"{f('val_loss', '7.3f')} {f('regressor_distance', '7.3f')} {f('landed_fraction', '6.2f')} "
                   f"{f('refined_distance', '7.4f')} {f('fit_iterations', '5.1f')} {f('parameters', '8.0f')} "
                   f"{format(_num(r['flops_per_image']) / 1e6, '7.1f') if math.isfinite(_num(r['flops_per_image'])) else '-':>7} "
                   f"{f('images_per_s', '7.0f')} {r['on_front']}")
    return out


def pareto_png(rows: list[dict], path, title: str = "") -> None:
    """Landing fraction against latency and against parameters, every finished trial a dot, each
    front's members circled and named; refined Distance as the colour. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sevi.io.atomic import save_png

    done = [r for r in rows if r["status"] == "finished"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, against, xlabel in zip(axes, FRONT_AGAINST, ("regressor latency, ms per image", "parameters")):
        front = set(pareto_front(rows, against))
        xs = [_num(r[against]) for r in done]
        ys = [_num(r["landed_fraction"]) for r in done]
        cs = [_num(r["refined_distance"]) for r in done]
        sc = ax.scatter(xs, ys, c=cs, cmap="viridis_r", s=36, zorder=2)
        members = sorted((i for i in front), key=lambda i: _num(rows[i][against]))
        if members:
            ax.plot([_num(rows[i][against]) for i in members], [_num(rows[i]["landed_fraction"]) for i in members],
                    "r-", lw=1, zorder=1)
        for k, i in enumerate(members):
            r = rows[i]
            ax.scatter([_num(r[against])], [_num(r["landed_fraction"])], s=140, facecolors="none", edgecolors="r",
                       zorder=3)
            ax.annotate(label(r), (_num(r[against]), _num(r["landed_fraction"])), fontsize=7,
                        xytext=(6, -14 - 11 * k), textcoords="offset points", color="darkred",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("landed in the truth's optimum (fraction)")
        ax.set_ylim(-0.05, 1.1)
        ax.grid(alpha=0.3)
        if done:
            cb = fig.colorbar(sc, ax=ax, label="refined Distance (median)")
            cb.formatter.set_useOffset(False)
            cb.update_ticks()
    n_stop = sum(r["status"] == "stopped early" for r in rows)
    n_fail = sum(r["status"] == "failed" for r in rows)
    fig.suptitle(f"{title}  ({len(done)} finished, {n_stop} stopped early, {n_fail} failed; fronts in red)",
                 fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
