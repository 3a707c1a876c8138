"""``coating`` command line: ``simulate`` a plant history, compute the ``spectrum`` of a design,
``recommend`` the next thickness settings per furnace run.

Heavy imports (torch) live inside the subcommands so ``coating --help`` is instant.
``build_parser`` adds ``simulate`` and ``spectrum`` itself and ``recommend`` through
``add_recommend_parser`` (its defaults are ``RecommendConfig``'s, coating/recommend/config.py;
the command is ``coating.recommend.plan.run_recommend``).

    coating simulate --cycles N --seed S --out history.csv|.h5 [--standard-out STD.csv]
    coating spectrum --stack STACK.json [--angle DEG] [--out R.csv]
    coating recommend --history H.csv --runs NEW.csv --standard STD.csv --models DIR --out OUT

STACK.json: ``{"incident": n, "substrate": n, "layers": [{"n": [re, im]} or
{"material": NAME}, each with "thickness_nm": t, ...]}`` listed from the incident side to the
substrate; ``incident``/``substrate`` are a number, ``[re, im]`` or a material name.
R.csv has ``wavelength,R`` (nm, percent, unpolarised).

Input files are UTF-8 (a byte-order mark is accepted); CSV files are comma-separated, blank
lines ignored. Bad input ends in one line naming the file, the field and the expected form,
exit status 2 and no traceback; ``--debug`` (before or after the subcommand) shows it.
"""
from __future__ import annotations

import argparse
import json
import os

from sevi.cli.policy import run_command
from sevi.io.paths import check_outputs


def _cmd_simulate(args) -> int:
    from pathlib import Path

    from coating.line import plant, schema

    if args.cycles < 1:
        raise ValueError(f"--cycles must be >= 1, got {args.cycles}")
    if args.seed < 0:
        raise ValueError(f"--seed: got {args.seed}; expected a whole number >= 0")
    if Path(args.out).suffix.lower() not in (".csv", ".h5", ".hdf5"):
        raise ValueError(f"--out {args.out}: expected a .csv, .h5 or .hdf5 file name")
    check_outputs({"--out": args.out, "--standard-out": args.standard_out})
    # One run is a handful of tiny tensor ops: small work, one intra-op thread (main() applies
    # the thread policy, sevi.runtime.threads).
    params = plant.PlantParams()
    runs = plant.simulate(params, args.cycles, args.seed)
    schema.write_history(schema.history_from_measurements(runs), args.out)
    print(f"wrote {len(runs)} runs in {args.cycles} cleaning cycles to {args.out}")
    if args.standard_out:
        R = plant.standard_reflectance(params)
        schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), R[0], R[1]),
                              args.standard_out)
        print(f"wrote the standard to {args.standard_out}")
    return 0


def _index_spec(spec, wl, where: str):
    import math

    import torch

    from coating.optics import materials
    if isinstance(spec, str):
        try:
            return materials.index(spec, wl)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    # A real part <= 0 is no dielectric's and makes the admittances vanish: a NaN spectrum.
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not (math.isfinite(spec) and spec > 0):
            raise ValueError(f"{where}: expected a refractive index > 0 (finite), got {spec!r}")
        return torch.full_like(wl, float(spec)).to(torch.complex128)
    if isinstance(spec, list) and len(spec) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         for x in spec):
        if not (math.isfinite(spec[0]) and math.isfinite(spec[1]) and spec[0] > 0):
            raise ValueError(f"{where}: expected [n, k] with a finite real part n > 0, got {spec}")
        if spec[1] < 0:
            raise ValueError(f"{where}: imaginary part must be >= 0 (n + ik, k >= 0 absorbing), got {spec}")
        return torch.full_like(wl, float(spec[0])) + 1j * float(spec[1])
    raise ValueError(f"{where}: expected a number, [re, im] or a material name, got {spec!r}")


def load_stack(path, wl):
    """Parse STACK.json into ``(n_layers (L, W), thickness_nm (L,), n_incident, n_substrate)``."""
    import torch

    from coating.line.schema import read_utf8
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    try:
        doc = json.loads(read_utf8(path))  # UTF-8 (a BOM accepted); UTF-16 or latin-1 named
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object with 'incident', 'substrate', 'layers'")
    unknown = set(doc) - {"incident", "substrate", "layers"}
    if unknown or "layers" not in doc or "substrate" not in doc:
        raise ValueError(f"{path}: expected keys 'incident' (optional, default 1.0), 'substrate', "
                         f"'layers'; got {sorted(doc)}")
    n_inc = _index_spec(doc.get("incident", 1.0), wl, f"{path}: field 'incident'")
    if n_inc.imag.abs().max() > 0:
        raise ValueError(f"{path}: field 'incident': the incident medium must be lossless (k = 0)")
    n_sub = _index_spec(doc["substrate"], wl, f"{path}: field 'substrate'")
    layers = doc["layers"]
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: field 'layers': expected a non-empty list")
    ns, ds = [], []
    for i, layer in enumerate(layers):
        where = f"{path}: layers[{i}]"
        if not isinstance(layer, dict) or "thickness_nm" not in layer or \
                (("n" in layer) == ("material" in layer)):
            raise ValueError(f"{where}: expected {{'n': [re, im]}} or {{'material': NAME}} with 'thickness_nm'")
        t = layer["thickness_nm"]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not t >= 0 or t == float("inf"):
            raise ValueError(f"{where}: field 'thickness_nm': expected a finite number >= 0, got {t!r}")
        ns.append(_index_spec(layer.get("n", layer.get("material")), wl, where))
        ds.append(float(t))
    return torch.stack(ns), torch.tensor(ds, dtype=torch.float64), n_inc.real, n_sub


def _cmd_spectrum(args) -> int:
    import torch

    from coating.line.schema import _atomic
    from coating.optics.colour import Colorimeter
    from coating.optics.transfer_matrix import default_wavelengths_nm, reflectance

    check_outputs({"--out": args.out}, {"--stack": args.stack})
    wl = default_wavelengths_nm(torch.float64)
    n, d, n_inc, n_sub = load_stack(args.stack, wl)
    R = reflectance(n, d, wl, n_sub, n_inc, args.angle, "u")     # (W,)
    lab = Colorimeter.build(wl).lab(R)
    if args.out:
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("wavelength,R\n")
                for w, r in zip(wl.tolist(), (100 * R).tolist()):
                    f.write(f"{w:g},{r!r}\n")
        _atomic(args.out, write)
        print(f"wrote {args.out}")
    L, a, b = lab.tolist()
    print(f"L*={L:.3f} a*={a:.3f} b*={b:.3f}  (D65, CIE 1964 10 deg, {args.angle:g} deg, unpolarised)")
    return 0


def _add_debug(p, default=argparse.SUPPRESS) -> None:
    # On the main parser and on every subcommand, so it works before or after the subcommand;
    # a subcommand's default is SUPPRESS so it cannot undo a --debug given before it.
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the Python traceback of an error instead of one line")


def _add_threads(p, default=argparse.SUPPRESS) -> None:
    # Like --debug: before or after the subcommand.
    p.add_argument("--threads", type=int, default=default, metavar="N",
                   help="CPUs to use (default: every core this process may run on, or OMP_NUM_THREADS; "
                        "never more). Coating work is small: one thread per tensor op, and recommend plans "
                        "the runs of one call side by side in up to N processes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coating", description="AR-coating physics and plant tools")
    _add_debug(parser, False)
    _add_threads(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a plant history (one row per furnace run)")
    p.add_argument("--cycles", type=int, required=True, help="number of cleaning cycles")
    p.add_argument("--seed", type=int, required=True, help="random seed")
    p.add_argument("--out", required=True, help="history file, .csv or .h5")
    p.add_argument("--standard-out", help="also write the standard (target) CSV here")
    _add_debug(p)
    _add_threads(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("spectrum", help="reflectance and L*a*b* of one design")
    p.add_argument("--stack", required=True, help="STACK.json (layers from the incident side)")
    p.add_argument("--angle", type=float, default=0.0, help="angle of incidence, degrees")
    p.add_argument("--out", help="write wavelength,R (percent) to this CSV")
    _add_debug(p)
    _add_threads(p)
    p.set_defaults(func=_cmd_spectrum)

    add_recommend_parser(sub)
    return parser


# The flag of each RecommendConfig field, for messages in the user's terms.
_RECOMMEND_FLAGS = {"robust_draws": "--robust", "spectral_weight": "--spectral-weight",
                    "bound_rel": "--bound-rel", "max_step_rel": "--max-step-rel"}


def recommend_config(args):
    """The ``RecommendConfig`` of ``coating recommend``'s flags; a value out of range is named by
    its flag."""
    from coating.recommend.config import RecommendConfig, RecommendConfigError
    try:
        return RecommendConfig(robust_draws=args.robust, spectral_weight=args.spectral_weight,
                               bound_rel=args.bound_rel, max_step_rel=args.max_step_rel,
                               fine_tune=not args.no_fine_tune, refit=not args.no_refit)
    except RecommendConfigError as e:
        raise ValueError(f"{_RECOMMEND_FLAGS[e.field]} {e.value}: expected {e.expected}") from None


def _cmd_recommend(args) -> int:
    from coating.recommend.plan import run_recommend
    from sevi.io.paths import clean_temporaries
    policy = getattr(args, "thread_policy", None) or _thread_policy(args)
    clean_temporaries(args.out)  # OUT is a folder (written whole by sevi.io.atomic.atomic_folder)
    plans = run_recommend(args.history, args.runs, args.standard, args.models, args.out, args.kind,
                          recommend_config(args), workers=policy.budget, executor=args.parallel)
    for p in plans:
        iv = "" if p.interval is None else \
            f" (next run F {p.interval.median[0]:.2f} [{p.interval.lo[0]:.2f}, {p.interval.hi[0]:.2f}]" \
            f" B {p.interval.median[1]:.2f} [{p.interval.lo[1]:.2f}, {p.interval.hi[1]:.2f}]" + \
            ("" if p.interval.gain is None else
             f"; gain F+B {p.interval.gain.median:+.2f} [{p.interval.gain.lo:+.2f}, {p.interval.gain.hi:+.2f}]") + ")"
        print(f"{p.furnace_no}: cycle {p.cycle}, predicted dE00 F {p.rec.dE00[0]:.3f} B {p.rec.dE00[1]:.3f}{iv}"
              + (f"; treat with care: {', '.join(p.care)}" if p.care else ""))
    care = sum(bool(p.care) for p in plans)
    print(f"wrote {len(plans)} recommendation(s) to {args.out}" + (f"; {care} to treat with care" if care else ""))
    return 0


def add_recommend_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``recommend`` to a ``coating`` sub-parser set (``argparse`` subparsers object); its
    defaults are ``RecommendConfig``'s."""
    from coating.recommend.config import RecommendConfig
    default = RecommendConfig()
    p = subparsers.add_parser("recommend", help="recommend the next thickness settings per furnace run")
    p.add_argument("--history", required=True, help="plant history, .csv or .h5")
    p.add_argument("--runs", required=True, help="NEW.csv: furnace_no [, cycle_id, run_in_cycle, date, measurements]")
    p.add_argument("--standard", required=True, help="standard CSV wavelength,R_F,R_B")
    p.add_argument("--models", required=True, help="model registry directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kind", default="greybox", choices=("greybox", "model1"), help="model kind to use")
    p.add_argument("--no-fine-tune", action="store_true",
                   help="plan with the registry model as it is: no refit, no fine-tuning on newer / measured runs")
    p.add_argument("--no-refit", action="store_true",
                   help="grey box: update the cycle model by filter steps (fine-tuning) instead of fitting it "
                        "again on all of the cycle's runs and the measured run (the default)")
    p.add_argument("--bound-rel", type=float, default=default.bound_rel,
                   help="bounds: median settings -+ this fraction")
    p.add_argument("--max-step-rel", type=float, default=default.max_step_rel,
                   help="largest change per run, fraction")
    p.add_argument("--robust", type=int, default=default.robust_draws, metavar="N",
                   help="robust design: minimise the expected dE00^2 over N draws of the run's own "
                        f"deposition errors (grey box only; 0 = nominal; default {default.robust_draws})")
    p.add_argument("--spectral-weight", type=float, default=default.spectral_weight, metavar="W",
                   help="weight of the spectral distance to the standard against dE00^2 (default "
                        f"{default.spectral_weight}); lower trades curve shape for colour consistency")
    p.add_argument("--parallel", default="processes", choices=("processes", "threads"),
                   help="how the runs of one call are planned side by side (default processes: the faster "
                        "beside other CPU-bound work, BENCHMARKS.md)")
    _add_debug(p)
    _add_threads(p)
    p.set_defaults(func=_cmd_recommend)
    return p


def _thread_policy(args):
    """The project's thread policy (``sevi.runtime.threads``) for a coating command: small work
    (one intra-op thread), ``--threads`` the budget. Applied before the heavy imports."""
    from sevi.runtime.threads import apply_thread_policy
    return apply_thread_policy(getattr(args, "threads", None), work="small")


def _run(args) -> int:
    args.thread_policy = _thread_policy(args)
    return args.func(args)


def main(argv=None) -> int:
    """The ``coating`` command, under the project's one error policy (``sevi.cli.policy``): bad
    input ends in one line ``coating <command>: <file>: <field>: <expected>``, exit status 2 and no
    traceback (``--debug`` shows it); Ctrl-C in exit status 130. Every subcommand runs under the
    thread policy (``--threads``)."""
    args = build_parser().parse_args(argv)
    return run_command("coating", args.command, lambda: _run(args), getattr(args, "debug", False),
                       exiting=argv is None)


if __name__ == "__main__":
    raise SystemExit(main())
