"""Accumulated-image files (HDF5): a ``counts`` stack (n, G, G) with ``image_id``, or one image."""

from __future__ import annotations

import numpy as np

from sevi.runtime.errors import InputError


def open_images(path: str):
    """(h5py.File, dataset (n, G, G) or (G, G), image_ids or None). Raises InputError (TableError) on a bad file."""
    import h5py

    from sevi.io.tables import open_h5
    f = open_h5(path)
    for name in ("counts", "image"):
        if name in f and isinstance(f[name], h5py.Dataset):
            ds = f[name]
            if ds.ndim == 3:
                ids = f["image_id"][()].astype(np.int32) if "image_id" in f else np.arange(ds.shape[0], dtype=np.int32)
                if len(ids) != ds.shape[0]:
                    raise InputError(f"{path}: image_id has {len(ids)} entries, {name} {ds.shape[0]} images")
                uniq, n_seen = np.unique(ids, return_counts=True)
                if (n_seen > 1).any():  # the Answer's rows are keyed by ImageId: two images, one key
                    raise InputError(f"{path}: image_id: {uniq[n_seen > 1][0]} appears "
                                     f"{n_seen[n_seen > 1][0]} times; expected one image per ImageId")
                return f, ds, ids
            if ds.ndim == 2:
                return f, ds, None
            raise InputError(f"{path}: dataset '{name}' has shape {ds.shape}; expected (n, G, G) or (G, G)")
    found = ", ".join(f.keys()) or "nothing"
    f.close()
    raise InputError(f"{path}: no dataset 'counts' (n, G, G) or 'image' (G, G) (found: {found})")
