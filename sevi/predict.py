"""`sevi predict`: anisotropy parameters and their 1-sigma error bars from accumulated images.

Input (``--images``): an HDF5 file holding either
  * ``counts`` (n, G, G) with ``image_id`` (n,) (a ``sevi simulate`` output), or
  * a single accumulated image: a 2-D dataset ``image`` (G, G) or ``counts`` (G, G).
Axis 0 = x, axis 1 = z over [-1, 1]. Images must be square, with finite counts >= 0 and at least
one electron (the first bad image and pixel are named). G must be a multiple of the model's grid (rebinned exactly),
and each image's electron total must lie within the range the model was trained for (both shells
together: 2 * electrons[0] .. 2 * electrons[1], widened by ``--electron-tolerance``, default 15%,
which covers the ~10% of electrons a real detector misses).

Output (``--out``, written atomically):
  * ``Answer``: the course's table (SphereId '<u1', R '<f8', beta '<f8' (L,), smaller R first),
    with an ``ImageId`` field first when the input held several images (two rows per image);
  * ``AnswerUncertainty``: the same layout and rows, holding the 1-sigma uncertainties of R and
    beta (SphereId as in Answer);
  * ``AnswerSigmaR``: (ImageId,) SphereId, sigma_R '<f8', sigma_R_sd '<f8' (the shell widths and
    their uncertainties, which the course's Answer has no field for).

Refinement (the default; ``--no-refine`` skips it): each image's answer is refined by the Poisson
likelihood of the image under the exact forward model plus the training prior (sevi/fit.py), and
the uncertainties are the curvature of that objective at its optimum. A direct-path model's images
(summed frames, electron units, with an ``n_frames`` attribute) are fitted with their own forward
model and noise (sevi/fit_direct.py). Then also:
  * ``AnswerRegressor``: the regressor's own answer, laid out as ``Answer``;
  * ``RefineDiagnostics``: (ImageId,) log_likelihood, log_posterior, chi2_dof, iterations,
    converged (1 or 0), start (which starting point won; where overlapping shells leave several
    optima, each one's start and weight in the mixture, e.g. "answer 0.70 + swapped 0.30") per
    image. A fit that did not converge is named on stderr, never silent.
Without refinement the uncertainties are the model's heteroscedastic head (a Gaussian log-variance
per target trained by NLL; model.py / training.py). Calibration of both: tools/eval_sevi.py and
tools/eval_refine.py (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict R, sigma_R and betas (with error bars) from accumulated images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt, or a dir holding it (final model or checkpoint)")
    p.add_argument("--images", required=True, help="HDF5 with counts (n, G, G) + image_id, or one 2-D image")
    p.add_argument("--out", required=True, help="output HDF5 (Answer, AnswerUncertainty, AnswerSigmaR)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:k] (default auto)")
    p.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--electron-tolerance", type=float, default=0.15,
                   help="relative slack on the trained electron range (default 0.15)")
    p.add_argument("--no-refine", action="store_true",
                   help="the regressor's answer alone (default: refined by the likelihood fit, sevi/fit.py)")
    p.set_defaults(func=run)


class ModelFileError(ValueError):
    """A --model path that is missing, or not a model file written by sevi's training."""


def load_model_file(path, device):
    """``sevi.training.load_model`` with errors that name the file: (model in eval mode, its config).

    Raises ModelFileError for a missing file and for any file that is not a sevi model (random
    bytes, an HDF5 file, another program's torch file). Loading stays ``weights_only``: torch's
    own message for a refused pickle advises turning that off, which would let the file run code,
    so it is replaced, never passed on."""
    import pickle

    from sevi.training import load_model

    f = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
    expected = "expected model.pt written by sevi training (a final model or checkpoint), or the directory holding it"
    if not f.is_file():
        raise ModelFileError(f"{f}: no such model file; {expected}")
    try:
        return load_model(f, device)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
        why = {pickle.UnpicklingError: "not a torch file of tensors", EOFError: "empty or truncated",
               KeyError: f"no entry {e}", RuntimeError: "not a readable torch archive, or weights that do not "
                                                        "fit the model its config describes"}.get(type(e), "unexpected contents")
        raise ModelFileError(f"{f}: not a model file written by sevi ({why}); {expected}") from None
    except ValueError as e:  # the config in the file does not match this version's TrainConfig
        raise ModelFileError(f"{f}: its config: {e}") from None


def open_images(path: str):
    """(h5py.File, dataset (n, G, G) or (G, G), image_ids or None). Raises SystemExit or TableError on a bad file."""
    import h5py

    from sevi.io import open_h5
    f = open_h5(path)
    for name in ("counts", "image"):
        if name in f and isinstance(f[name], h5py.Dataset):
            ds = f[name]
            if ds.ndim == 3:
                ids = f["image_id"][()].astype(np.int32) if "image_id" in f else np.arange(ds.shape[0], dtype=np.int32)
                if len(ids) != ds.shape[0]:
                    raise SystemExit(f"sevi predict: {path}: image_id has {len(ids)} entries, {name} {ds.shape[0]} images")
                uniq, n_seen = np.unique(ids, return_counts=True)
                if (n_seen > 1).any():  # the Answer's rows are keyed by ImageId: two images, one key
                    raise SystemExit(f"sevi predict: {path}: image_id: {uniq[n_seen > 1][0]} appears "
                                     f"{n_seen[n_seen > 1][0]} times; expected one image per ImageId")
                return f, ds, ids
            if ds.ndim == 2:
                return f, ds, None
            raise SystemExit(f"sevi predict: {path}: dataset '{name}' has shape {ds.shape}; expected (n, G, G) or (G, G)")
    found = ", ".join(f.keys()) or "nothing"
    f.close()
    raise SystemExit(f"sevi predict: {path}: no dataset 'counts' (n, G, G) or 'image' (G, G) (found: {found})")


def electron_window(cfg, tolerance: float) -> tuple[float, float]:
    """Accepted total electrons per image (both shells) for a model trained with cfg.electrons.

    ``tolerance`` is relative slack, a finite number in [0, 1): at 1 or more the lower end would
    reach zero electrons, where no image says anything."""
    if not 0.0 <= tolerance < 1.0:  # also false for NaN
        raise ValueError(f"--electron-tolerance: got {tolerance}; expected a number in [0, 1) (relative slack)")
    return 2 * cfg.electrons[0] * (1 - tolerance), 2 * cfg.electrons[1] * (1 + tolerance)


def check_images(c, first: int = 0, nonnegative: bool = True) -> None:
    """Raise ValueError naming the image (index ``first + k``) and pixel ``(x, z)`` of the first
    defect of a (b, H, W) stack: not square, a NaN or infinite pixel, a negative pixel (with
    ``nonnegative``: counts; the direct path's background-subtracted images may dip below 0), or
    no electrons at all."""
    import torch

    if c.ndim != 3 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"image {first} is {' x '.join(map(str, c.shape[1:]))} pixels; "
                         f"expected a square image (G, G), axis 0 = x, axis 1 = z")
    bad = None
    if c.is_floating_point() and not bool(torch.isfinite(c).all()):
        bad, what = ~torch.isfinite(c), "expected finite electron counts"
    elif nonnegative and bool((c < 0).any()):
        bad, what = c < 0, "expected electron counts >= 0"
    if bad is not None:
        k, i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"image {first + k}, pixel (x {i}, z {j}) is {c[k, i, j].item()}; {what}")
    empty = (c.reshape(c.shape[0], -1).sum(1) <= 0).nonzero()
    if len(empty):
        raise ValueError(f"image {first + int(empty[0])} holds no electrons; expected an accumulated image")


def predict_images(model, cfg, batches, device, tolerance: float = 0.15,
                   nonnegative: bool = False) -> dict[str, np.ndarray]:
    """Predictions for an iterable of (first_index, counts (b, G, G) numpy or tensor) batches.

    Every batch is checked first (``check_images``: square, finite, with ``nonnegative`` no pixel
    below 0, not empty; then the electron total against the model's training range), so no NaN
    answer comes out of a bad image. Returns numpy arrays beta, beta_sd (n, 2, L); R, R_sd,
    sigma_R, sigma_R_sd (n, 2); shells sorted by predicted R (the same order for the values and
    their uncertainties)."""
    import torch

    lo, hi = electron_window(cfg, tolerance)
    feats = cfg.features
    parts = []
    for first, counts in batches:
        c = torch.as_tensor(np.asarray(counts)).to(device)
        check_images(c, first, nonnegative)
        total = c.reshape(c.shape[0], -1).sum(1).double()
        bad = ((total < lo) | (total > hi)).nonzero()
        if len(bad):
            k = int(bad[0])
            raise ValueError(f"image {first + k} holds {int(total[k])} electrons; this model was trained on "
                             f"{cfg.electrons[0]}-{cfg.electrons[1]} per shell, so it accepts {lo:.0f}-{hi:.0f} "
                             f"in all (--electron-tolerance {tolerance})")
        x = feats(c)  # ValueError for a grid that does not rebin to the model's
        with torch.no_grad():
            parts.append(model.decode(model(x.to(device))))
    out = {k: torch.cat([p[k] for p in parts]).double().cpu().numpy() for k in parts[0]}
    for k, v in out.items():  # a damaged model can still load; never write its NaN as an answer
        if not np.isfinite(v).all():
            i = int(np.argmax(~np.isfinite(v.reshape(len(v), -1)).all(1)))
            raise ValueError(f"the model's {k} for image {i} is NaN or infinite; expected finite outputs "
                             f"(is the model file damaged?)")
    order = np.argsort(out["R"], axis=1)  # (n, 2); normally already [0, 1]
    for k in out:
        idx = order[..., None] if out[k].ndim == 3 else order
        out[k] = np.take_along_axis(out[k], idx, 1)
    return out


def write_answer(path, p: dict, ids, attrs: dict, regressor: dict | None = None, diagnostics: dict | None = None) -> None:
    """Write ``Answer`` (the course's table; ImageId first when ``ids`` is given), beside it
    ``AnswerUncertainty`` (the same layout and rows, holding 1-sigma uncertainties) and
    ``AnswerSigmaR`` (sigma_R and its 1-sigma), atomically. ``p``: ``predict_images``' output (or
    the refined answer, with ``regressor`` the first answer and ``diagnostics`` the fits')."""
    from sevi import io

    answer = io.answer_rows(p["R"], p["beta"], ids)
    unc = answer.copy()
    unc["R"] = p["R_sd"].reshape(-1)
    unc["beta"] = p["beta_sd"].reshape(len(unc), -1)
    sig_fields = ([("ImageId", "<i4")] if ids is not None else []) + [("SphereId", "<u1"), ("sigma_R", "<f8"),
                                                                      ("sigma_R_sd", "<f8")]
    sig = np.zeros(len(answer), np.dtype(sig_fields))
    if ids is not None:
        sig["ImageId"] = answer["ImageId"]
    sig["SphereId"], sig["sigma_R"], sig["sigma_R_sd"] = answer["SphereId"], p["sigma_R"].reshape(-1), p["sigma_R_sd"].reshape(-1)
    tables = {"Answer": answer, "AnswerUncertainty": unc, "AnswerSigmaR": sig}
    how = "1-sigma, heteroscedastic Gaussian head, calibrated on validation"
    if regressor is not None:
        tables["AnswerRegressor"] = io.answer_rows(regressor["R"], regressor["beta"], ids)
        how = "1-sigma, curvature of the log-likelihood plus log-prior at the refined optimum"
    if diagnostics is not None:
        n = len(diagnostics["chi2_dof"])
        d = np.zeros(n, np.dtype(([("ImageId", "<i4")] if ids is not None else []) + [
            ("log_likelihood", "<f8"), ("log_posterior", "<f8"), ("chi2_dof", "<f8"), ("iterations", "<i4"),
            ("converged", "u1"), ("start", "S64")]))
        if ids is not None:
            d["ImageId"] = ids
        for k in ("log_likelihood", "log_posterior", "chi2_dof", "iterations", "converged"):
            d[k] = diagnostics[k]
        d["start"] = [s.encode() for s in diagnostics["start"]]
        tables["RefineDiagnostics"] = d
    io.write_tables(path, tables, attrs={**attrs, "uncertainty": how, "refined": regressor is not None})


def refine_or_explain(p: dict, cfg, device, source: str, images, n_frames: int | None = None) -> tuple[dict, dict]:
    """Refine predictions (sevi/fit.py) over the training prior of the model; name the images whose fit
    did not converge on stderr. A direct-path model (spot_blur > 0) reads direct images (summed
    frames in electron units): they are fitted with their own forward model and noise
    (sevi/fit_direct.py), which needs ``n_frames``, the number of frames summed (the background's
    share of the noise); without it the refinement is refused with a clear message."""
    import sys

    from sevi.fit import refine_answers
    from sevi.training import prior_config

    noise = None
    if cfg.spot_blur > 0:
        if n_frames is None:
            raise SystemExit(f"{source}: the direct-path refinement needs the number of frames summed (an "
                             f"n_frames attribute on the image, as sevi analyze and sevi.direct.write_direct_image "
                             f"write it); add it, or use --no-refine")
        from sevi.fit_direct import direct_noise
        try:
            noise = direct_noise(int(n_frames), int(np.shape(images[0])[-1]))
        except ValueError as e:
            raise SystemExit(f"{source}: direct-path refinement: {e}") from None
    try:
        refined, diag = refine_answers(images, p, prior_config(cfg), device, noise=noise)
    except ValueError as e:
        raise SystemExit(f"{source}: refinement: {e}") from None
    bad = np.flatnonzero(~diag["converged"])
    if len(bad):
        print(f"sevi: warning: {source}: the refinement did not converge for {len(bad)} image(s) (rows "
              f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''}); see RefineDiagnostics", file=sys.stderr)
    misfit = np.flatnonzero(diag["chi2_dof"] > MISFIT_CHI2)
    if len(misfit):
        print(f"sevi: warning: {source}: the fitted image does not match the forward model for {len(misfit)} "
              f"image(s) (chi^2/dof above {MISFIT_CHI2}: rows {', '.join(map(str, misfit[:10]))}"
              f"{' ...' if len(misfit) > 10 else ''}); their answers and error bars are not to be trusted. "
              f"See RefineDiagnostics", file=sys.stderr)
    return refined, diag


# chi^2 per degree of freedom above which a refined image is named on stderr: a well-described image
# gives 1.00 +- 0.05 (BENCHMARKS.md, SEVI refinement); 1.5 flags a wrong optimum or physics the
# forward model lacks (e.g. saturated pixels where spots pile up on a direct image) without false alarms.
MISFIT_CHI2 = 1.5


def run(args: argparse.Namespace) -> int:
    import torch

    from sevi.generator import pick_device
    from sevi.paths import refuse_output_over_input

    if args.batch < 1:
        raise SystemExit("sevi predict: --batch must be >= 1")
    refuse_output_over_input({"--out": args.out}, {"--images": args.images, "--model": args.model})
    device = pick_device(args.device)
    model, cfg = load_model_file(args.model, device)
    f, ds, ids = open_images(args.images)
    with f:
        if ids is None:
            batches = [(0, ds[()][None])]
        else:
            batches = ((s, ds[s:s + args.batch]) for s in range(0, ds.shape[0], args.batch))
        try:
            with torch.inference_mode():
                p = predict_images(model, cfg, batches, device, args.electron_tolerance,
                                   nonnegative=cfg.spot_blur == 0)  # direct images may dip below 0
        except ValueError as e:
            raise SystemExit(f"sevi predict: {args.images}: {e}")
        first, diag = p, None
        if not args.no_refine:
            images = [ds[()]] if ids is None else [ds[i] for i in range(ds.shape[0])]
            p, diag = refine_or_explain(p, cfg, device, args.images, images, ds.attrs.get("n_frames"))
    write_answer(args.out, p, ids, attrs={"model": str(args.model), "images": str(args.images),
                                          "device": str(device), "model_grid": cfg.grid},
                 regressor=None if args.no_refine else first, diagnostics=diag)
    n = 1 if ids is None else len(ids)
    print(f"wrote Answer for {n} image{'s' * (n != 1)} to {args.out}")
    return 0
