"""Named batch recipes served by the generator pool. No Ray here: runnable on any box.

A recipe is built once per (name, parameters) on a device and then called with a seed:

    make = RECIPES["sevi-counts"]          # factory(params: dict, device) -> callable(seed) -> batch
    batch = make({"grid": 256, "batch": 8}, device)(seed=123)

A batch is a dict of numpy arrays (so it travels through Ray's object store zero-copy) and depends
only on (recipe, parameters, seed) and the device type, never on which actor made it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import numpy as np
import torch

Batch = dict[str, np.ndarray]
Recipe = Callable[[int], Batch]


def _to_numpy(batch: dict) -> Batch:
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in batch.items()}


def sevi_counts(params: dict, device: torch.device) -> Recipe:
    """Raw accumulated images from the default prior.

    params: grid (int, default 256), batch (int, default 8), electrons (int per shell; default the
    prior's 1.8-2.5 million). Batch: counts (B, G, G) int32, R, sigma_R (B, 2), beta (B, 2, L).
    """
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.prior import PriorConfig

    unknown = set(params) - {"grid", "batch", "electrons"}
    if unknown:
        raise ValueError(f"recipe 'sevi-counts': unknown parameters {sorted(unknown)}; known: grid, batch, electrons")
    prior = PriorConfig()
    if params.get("electrons"):
        prior = prior.with_electrons(int(params["electrons"]))
    gen = SeviGenerator(GeneratorConfig(grid=int(params.get("grid", 256))), device, prior)
    n = int(params.get("batch", 8))

    def make(seed: int) -> Batch:
        res, p = gen(seed, n)
        return _to_numpy({"counts": res.images, "R": p.R, "sigma_R": p.sigma_R, "beta": p.beta})

    return make


def sevi_images(params: dict, device: torch.device) -> Recipe:
    """Model-ready training batches: ``sevi.regressor.batches.make_batch`` for a ``DataConfig``
    given as a dict (``dataclasses.asdict(cfg.data)``: everything a batch depends on besides its
    seed, and nothing else; unknown fields refused)."""
    from sevi.regressor.batches import make_batch, make_generator
    from sevi.regressor.train_config import data_config_from_dict

    data = data_config_from_dict(params)
    gen = make_generator(data, device)
    return lambda seed: _to_numpy(make_batch(gen, data, seed))


def sevi_images_key(params: dict) -> tuple:
    """What determines a sevi-images batch besides the seed: the whole DataConfig, with defaults
    filled in (so written-out defaults and implicit ones are one key), by value (the narrowed
    prior's numbers, not a file name)."""
    from sevi.regressor.train_config import data_config_from_dict

    full = dataclasses.asdict(data_config_from_dict(params))
    return tuple(sorted((k, repr(v)) for k, v in full.items()))


def coating_spectra(params: dict, device: torch.device) -> Recipe:
    """Spectra and Lab around a cycle's machine state, for pretraining coating models.

    params: state (a ``coating.line.plant.PlantState``), batch (runs per batch, default 256).
    Batch: ``coating.models.pretraining.coating_spectra_batch``'s arrays.
    """
    from coating.models.pretraining import coating_spectra_batch

    unknown = set(params) - {"state", "batch"}
    if unknown or "state" not in params:
        raise ValueError(f"recipe 'coating-spectra' takes 'state' (a PlantState) and 'batch'; got {sorted(params)}")
    n = int(params.get("batch", 256))
    return lambda seed: _to_numpy(coating_spectra_batch(params["state"], n, seed, device))


RECIPES: dict[str, Callable[[dict, torch.device], Recipe]] = {
    "sevi-counts": sevi_counts,
    "sevi-images": sevi_images,
    "coating-spectra": coating_spectra,
}


# What determines a recipe's batches besides the seed; recipes not listed are keyed on all params.
BATCH_KEYS: dict[str, Callable[[dict], tuple]] = {"sevi-images": sevi_images_key}


class RecipeBook:
    """Builds each (recipe, what determines its batches) once on a device and keeps it (tables stay
    device-resident), the ``max_built`` most recently used at most."""

    def __init__(self, device: torch.device, max_built: int = 8):
        self.device = device
        self.max_built = max_built
        self._built: collections.OrderedDict[tuple[str, tuple], Recipe] = collections.OrderedDict()

    def key(self, name: str, params: dict) -> tuple[str, tuple]:
        if name not in RECIPES:
            raise ValueError(f"unknown recipe '{name}'; known: {', '.join(sorted(RECIPES))}")
        by = BATCH_KEYS.get(name)
        return name, (by(params) if by else tuple(sorted((k, repr(v)) for k, v in params.items())))

    def __call__(self, name: str, params: dict, seed: int) -> Batch:
        key = self.key(name, params)
        if key not in self._built:
            self._built[key] = RECIPES[name](dict(params), self.device)
            while len(self._built) > self.max_built:
                self._built.popitem(last=False)
        self._built.move_to_end(key)
        return self._built[key](int(seed))

    @property
    def built(self) -> list[str]:
        return [name for name, _ in self._built]
