"""A lab's VMI image, its mask and its gain map, read from the files camera software writes.

Formats (by the file's extension):

* ``.npy``: one 2-D array of any integer or real dtype (NumPy's own reader, no pickles);
* ``.tif`` / ``.tiff``: one grey channel of 8, 16 or 32 bits (Pillow modes ``L``, ``I;16``,
  ``I;16B``, ``I`` and ``F``: unsigned 16-bit counts, signed 32-bit counts, 32-bit floats). A
  multi-page TIFF (a stack of frames) is summed page by page into one accumulated image. Colour
  (RGB, RGBA, a palette, CMYK, ...) is refused: a colour picture is not a count image;
* ``.png``: one grey channel of 8 or 16 bits (colour refused as for TIFF);
* ``.h5`` / ``.hdf5``: the course's accumulated-image file (``sevi.io.image_file``): a 2-D ``image``
  or ``counts`` dataset, or a ``counts`` stack holding one image. A direct (summed-frame) image,
  which carries ``n_frames``, is not Poisson counts and is refused (``sevi predict`` / ``sevi
  analyze`` fit it).

Orientation (docs/conventions.md, "Any image"): a camera's file is read as it is shown, rows = z
(the polarisation axis vertical: PyAbel's ``IM[row, column]``), and transposed here to the fit's
axis 0 = x, axis 1 = z. The course's HDF5 files are already axis 0 = x and are not transposed.

Why Pillow: NumPy and h5py read ``.npy`` and HDF5 but no TIFF or PNG; Pillow decodes both, 16-bit
grey and multi-page TIFF included, and is already installed with matplotlib (pyproject.toml pins
its range).

Every failure is an ``InputError`` of one line naming the file and what is expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sevi.runtime.errors import InputError

__all__ = ["LabImage", "FORMATS", "read_lab_image", "read_array"]

FORMATS = (".npy", ".tif", ".tiff", ".png", ".h5", ".hdf5")
_GREY_MODES = {"1": "1-bit", "L": "8-bit", "I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit",
               "I;16N": "16-bit", "I": "32-bit integer", "F": "32-bit float"}
_EXPECTED = "one grey channel of counts (a 16- or 32-bit TIFF or a 16-bit PNG; .npy, or the course's HDF5)"


@dataclass
class LabImage:
    """An image read from a file: ``data`` (nx, nz) float64 or int64, axis 0 = x, axis 1 = z;
    ``what`` says what was read (format, bits, pages), for the command's report."""

    path: str
    data: np.ndarray
    what: str


def _extension(path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise InputError(f"{path}: extension '{ext or '(none)'}' is not read; expected one of "
                         f"{', '.join(FORMATS)}")
    return ext


def _native(a: np.ndarray, path) -> np.ndarray:
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    raise InputError(f"{path}: holds {a.dtype}; expected {_EXPECTED}")


def _npy(path) -> tuple[np.ndarray, str]:
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:  # a pickled object array, or not a .npy file at all
        raise InputError(f"{path}: not a NumPy array file of numbers ({e}); expected {_EXPECTED}") from None
    if not isinstance(a, np.ndarray):
        raise InputError(f"{path}: not a single array; expected {_EXPECTED}")
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        raise InputError(f"{path}: has shape {a.shape}, colour channels; expected {_EXPECTED}")
    if a.ndim != 2:
        raise InputError(f"{path}: has shape {a.shape}; expected {_EXPECTED}, a 2-D array")
    return a.T, f".npy {a.dtype}"


def _pillow(path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read; expected {_EXPECTED}") from None
    with im:
        pages = getattr(im, "n_frames", 1)
        total = None
        for p in range(pages):
            im.seek(p)
            if im.mode not in _GREY_MODES:
                raise InputError(f"{path}: page {p} has colour channels (mode {im.mode}); expected {_EXPECTED}: "
                                 f"save the camera's raw grey counts, not a colour rendering")
            a = _native(np.asarray(im), path)
            if total is None:
                total, mode = a, im.mode
            elif a.shape != total.shape:
                raise InputError(f"{path}: page {p} is {a.shape[::-1]} pixels, page 0 {total.shape[::-1]}; "
                                 f"expected pages of one size (the frames of one image)")
            else:
                total = total + a
    fmt = Path(path).suffix.lower().lstrip(".").upper()
    what = f"{fmt} {_GREY_MODES[mode]} grey"
    if pages > 1:
        what += f", {pages} pages summed"
    return total.T, what


def _h5(path) -> tuple[np.ndarray, str]:
    from sevi.io.image_file import open_images

    with open_images(path) as f:
        if "n_frames" in f.attrs:
            raise InputError(f"{path}: dataset '{f.name}' is a direct image (summed frames, n_frames "
                             f"{int(f.attrs['n_frames'])}), not counts; expected an accumulated count image "
                             f"(sevi predict and sevi analyze fit direct images)")
        if f.n != 1:
            raise InputError(f"{path}: dataset '{f.name}' holds {f.n} images; expected one (sevi predict answers "
                             f"a stack)")
        return f.image(0), f"HDF5 '{f.name}'"


def read_array(path, what: str = "image") -> LabImage:
    """The 2-D array of an image, mask or gain file, axis 0 = x (module docstring)."""
    path = os.fspath(path)
    ext = _extension(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    if ext == ".npy":
        a, how = _npy(path)
    elif ext in (".h5", ".hdf5"):
        a, how = _h5(path)
    else:
        a, how = _pillow(path)
    return LabImage(path, _native(np.ascontiguousarray(a), path), how)


def read_lab_image(image, mask=None, gain=None) -> tuple[LabImage, LabImage | None, LabImage | None]:
    """The image and, when given, its mask (nonzero = pixel left out) and gain map, each read by
    :func:`read_array`; their shapes are checked against the image's by ``sevi.pipeline.fit_image``."""
    img = read_array(image, "image")
    return img, (read_array(mask, "mask") if mask is not None else None), \
        (read_array(gain, "gain") if gain is not None else None)
