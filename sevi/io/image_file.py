"""Accumulated-image files (HDF5): a ``counts`` stack (n, G, G) with ``image_id``, or one image.

Read as lab software writes them (docs/formats.md, counts file):

* images of any integer dtype, signed or unsigned, of either byte order, or of a real (float)
  dtype; each batch is handed on in the machine's own byte order as int64 (integers) or float64
  (floats), so every later check and the model read them alike. Whether the values are counts
  (whole numbers >= 0) is the reader's check, which knows the model's image kind
  (``sevi.regressor.inference.check_images``); complex, boolean, text or compound images are
  refused here, as is a stack of no images;
* ``image_id`` of any integer dtype whose values fit the Answer's ImageId ('<i4'); an id beyond
  the 32-bit range is refused, never wrapped, and ids that are not integers (floats) are refused.
"""

from __future__ import annotations

import numpy as np

from sevi.runtime.errors import InputError

__all__ = ["ImageFile", "open_images", "IMAGE_ID_DTYPE"]

IMAGE_ID_DTYPE = np.dtype("<i4")  # the Answer's ImageId (sevi.io.tables.answer_dtype)
_I32 = np.iinfo(np.int32)
_I64 = np.iinfo(np.int64)


class ImageFile:
    """An open image file: ``n`` images, read ``start:stop`` at a time by :meth:`read`.

    ``ids``: the image ids (int32), or None for a file holding one 2-D image. ``attrs``: the
    image dataset's attributes (``n_frames`` of a direct image). Use as a context manager."""

    def __init__(self, f, ds, ids, path: str):
        self.f, self.ds, self.ids, self.path = f, ds, ids, str(path)
        self.name = ds.name.lstrip("/")
        self.attrs = ds.attrs
        self.n = 1 if ids is None else int(ds.shape[0])

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images ``start:stop`` as (b, G, G), int64 or float64 in native byte order."""
        raw = self.ds[()][None] if self.ids is None else self.ds[start:stop]
        return _native(raw, self.path, self.name, start)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as (G, G)."""
        return self.read(i, i + 1)[0]

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "ImageFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _native(raw: np.ndarray, path: str, name: str, first: int) -> np.ndarray:
    kind = raw.dtype.kind
    if kind == "u" and raw.dtype.itemsize == 8 and raw.size and int(raw.max()) > _I64.max:
        k = int(np.argmax(raw.reshape(len(raw), -1).max(1) > _I64.max))
        raise InputError(f"{path}: dataset '{name}': image {first + k} holds a count above {_I64.max}; "
                         f"expected electron counts")
    if kind in "iu":
        return raw.astype(np.int64)        # native byte order, one integer type
    if kind == "f":
        return raw.astype(np.float64)
    raise InputError(f"{path}: dataset '{name}' has dtype {raw.dtype}; expected electron counts of an integer "
                     f"or real (float) dtype")


def _check_dtype(dt: np.dtype, path, name: str) -> None:
    what = {"c": "complex numbers", "b": "booleans", "S": "text", "U": "text", "O": "objects (text)",
            "V": "a compound or opaque type"}.get(dt.kind, f"dtype {dt}")
    if dt.kind not in "iuf" or dt.names is not None:
        raise InputError(f"{path}: dataset '{name}' holds {what} ({dt}); expected electron counts of an integer "
                         f"or real (float) dtype")


def _image_ids(f, path, n: int, name: str) -> np.ndarray:
    import h5py

    if "image_id" not in f:
        return np.arange(n, dtype=np.int32)
    d = f["image_id"]
    if not isinstance(d, h5py.Dataset) or d.ndim != 1:
        raise InputError(f"{path}: image_id: expected a 1-D dataset of integer ids, one per image, got "
                         + (f"shape {d.shape}" if isinstance(d, h5py.Dataset) else "a group"))
    if d.dtype.kind not in "iu":
        raise InputError(f"{path}: image_id has dtype {d.dtype}; expected integer ids (any integer dtype, "
                         f"values within the Answer's 32-bit ImageId)")
    raw = d[()]
    if len(raw) != n:
        raise InputError(f"{path}: image_id has {len(raw)} entries, {name} {n} images")
    if len(raw):
        big = (raw > _I32.max) if raw.dtype.kind == "u" else ((raw < _I32.min) | (raw > _I32.max))
        if big.any():
            k = int(np.argmax(big))
            raise InputError(f"{path}: image_id {int(raw[k])} (image {k}) does not fit the Answer's ImageId, "
                             f"a 32-bit integer ({_I32.min}..{_I32.max}); expected ids in that range "
                             f"(renumber the images)")
    return raw.astype(np.int32)  # the values fit: checked above


def open_images(path: str) -> ImageFile:
    """The :class:`ImageFile` of ``path``. Raises InputError (TableError) on a bad file."""
    import h5py

    from sevi.io.tables import open_h5
    f = open_h5(path)
    try:
        for name in ("counts", "image"):
            if name in f and isinstance(f[name], h5py.Dataset):
                ds = f[name]
                _check_dtype(ds.dtype, path, name)
                if ds.ndim == 3:
                    if ds.shape[0] == 0:
                        raise InputError(f"{path}: dataset '{name}' holds no images (shape {ds.shape}); "
                                         f"expected (n, G, G) with n >= 1")
                    ids = _image_ids(f, path, ds.shape[0], name)
                    uniq, n_seen = np.unique(ids, return_counts=True)
                    if (n_seen > 1).any():  # the Answer's rows are keyed by ImageId: two images, one key
                        raise InputError(f"{path}: image_id: {uniq[n_seen > 1][0]} appears "
                                         f"{n_seen[n_seen > 1][0]} times; expected one image per ImageId")
                    return ImageFile(f, ds, ids, path)
                if ds.ndim == 2:
                    if 0 in ds.shape:
                        raise InputError(f"{path}: dataset '{name}' has shape {ds.shape}; expected an image (G, G)")
                    return ImageFile(f, ds, None, path)
                raise InputError(f"{path}: dataset '{name}' has shape {ds.shape}; expected (n, G, G) or (G, G)")
        found = ", ".join(f.keys()) or "nothing"
        raise InputError(f"{path}: no dataset 'counts' (n, G, G) or 'image' (G, G) (found: {found})")
    except BaseException:
        f.close()
        raise
