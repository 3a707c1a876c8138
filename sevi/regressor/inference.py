"""The regressor at inference: a model file loaded with errors that name it, images checked, and
predictions with their error bars (the model's heteroscedastic head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ModelFileError(ValueError):
    """A --model path that is missing, or not a model file written by sevi's training."""


def load_model_file(path, device):
    """``sevi.regressor.checkpoints.load_model`` with errors that name the file: (model in eval mode, its config).

    Raises ModelFileError for a missing file and for any file that is not a sevi model (random
    bytes, an HDF5 file, another program's torch file). Loading stays ``weights_only``: torch's
    own message for a refused pickle advises turning that off, which would let the file run code,
    so it is replaced, never passed on."""
    import pickle

    from sevi.regressor.checkpoints import load_model

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


def electron_window(cfg, tolerance: float) -> tuple[float, float]:
    """Accepted total electrons per image (both shells) for a model trained with cfg.data.electrons.

    ``tolerance`` is relative slack, a finite number in [0, 1): at 1 or more the lower end would
    reach zero electrons, where no image says anything."""
    if not 0.0 <= tolerance < 1.0:  # also false for NaN
        raise ValueError(f"--electron-tolerance: got {tolerance}; expected a number in [0, 1) (relative slack)")
    return 2 * cfg.data.electrons[0] * (1 - tolerance), 2 * cfg.data.electrons[1] * (1 + tolerance)


def check_images(c, first: int = 0, nonnegative: bool = True) -> None:
    """Raise ValueError naming the image (index ``first + k``) and pixel ``(x, z)`` of the first
    defect of a (b, H, W) stack: not square, a NaN or infinite pixel, with ``nonnegative`` (count
    images) a negative pixel or a fraction (counts are whole numbers, in whatever dtype they come:
    ``sevi.io.image_file``; the direct path's background-subtracted images may dip below 0 and hold
    fractions), a complex value, or no electrons at all."""
    import torch

    if c.ndim != 3 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"image {first} is {' x '.join(map(str, c.shape[1:]))} pixels; "
                         f"expected a square image (G, G), axis 0 = x, axis 1 = z")
    if c.is_complex() or c.dtype == torch.bool:
        raise ValueError(f"images have dtype {str(c.dtype).replace('torch.', '')}; expected real electron counts")
    if not c.is_floating_point() and c.dtype != torch.int64:
        c = c.to(torch.int64)  # comparisons are not implemented for every integer type (uint32: "lt_cpu")
    bad = None
    if c.is_floating_point() and not bool(torch.isfinite(c).all()):
        bad, what = ~torch.isfinite(c), "expected finite electron counts"
    elif nonnegative and bool((c < 0).any()):
        bad, what = c < 0, "expected electron counts >= 0"
    elif nonnegative and c.is_floating_point() and bool((c != torch.round(c)).any()):
        bad, what = c != torch.round(c), "expected whole electron counts (a count image)"
    if bad is not None:
        k, i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"image {first + k}, pixel (x {i}, z {j}) is {c[k, i, j].item()}; {what}")
    empty = (c.reshape(c.shape[0], -1).sum(1) <= 0).nonzero()
    if len(empty):
        raise ValueError(f"image {first + int(empty[0])} holds no electrons; expected an accumulated image")


def predict_images(model, cfg, batches, device, tolerance: float = 0.15,
                   nonnegative: bool = False) -> dict[str, np.ndarray]:
    """Predictions for an iterable of (first_index, counts (b, G, G) numpy or tensor) batches.

    Every batch is checked first (``check_images``: square, finite, with ``nonnegative`` whole
    counts, none below 0, not empty; then the electron total against the model's training range), so no NaN
    answer comes out of a bad image. Returns numpy arrays beta, beta_sd (n, 2, L); R, R_sd,
    sigma_R, sigma_R_sd (n, 2); shells sorted by predicted R (the same order for the values and
    their uncertainties)."""
    import torch

    lo, hi = electron_window(cfg, tolerance)
    feats = cfg.data.features
    parts = []
    for first, counts in batches:
        arr = np.asarray(counts)
        if arr.dtype.kind in "iu":  # any integer type and byte order; torch compares only some
            arr = arr.astype(np.int64)
        elif not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        c = torch.as_tensor(arr).to(device)
        check_images(c, first, nonnegative)
        total = c.reshape(c.shape[0], -1).sum(1).double()
        bad = ((total < lo) | (total > hi)).nonzero()
        if len(bad):
            k = int(bad[0])
            raise ValueError(f"image {first + k} holds {int(total[k])} electrons; this model was trained on "
                             f"{cfg.data.electrons[0]}-{cfg.data.electrons[1]} per shell, so it accepts {lo:.0f}-{hi:.0f} "
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
