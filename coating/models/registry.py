"""A model registry on disk: one directory per cleaning cycle and model kind.

Layout::

    MODELS/
      cycle_0003/
        greybox/
          model.pt     torch.save(model.state_dict()): tensors only (the normaliser is a set of
                       buffers in it), so it loads with torch.load(weights_only=True)
          model.json   kind, cycle_id, hparams, metrics (validation), schema (version, wavelength
                       grid, setting and std columns), data_sha256 (of the training rows),
                       n_train, last_run_in_cycle, model_sha256 (of model.pt), created
        model1/ ...
        model2/ ...

Writes are atomic: each file goes to a temporary file in the same directory, then
``os.replace``; ``model.pt`` first, ``model.json`` last (it records ``model.pt``'s SHA-256, so a
reader never pairs a new ``model.pt`` with an old ``model.json`` unnoticed).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from coating.line.schema import SET_COLS, STD_COLS, WAVELENGTHS_NM, History
from coating.models.fitting import build_model_from_state
from coating.models.hparams import resolve_hparams
from sevi.io.atomic import atomic_bytes

__all__ = ["SCHEMA_VERSION", "schema_descriptor", "data_sha256", "save", "save_fit", "load", "load_all",
           "list_models", "check_schema", "cycle_dir"]

SCHEMA_VERSION = "coating-history/1"   # the plant-history columns (docs/coating.md); bump when COLUMNS change


def schema_descriptor() -> dict:
    """What a model's inputs and outputs mean: version, grid (nm), setting and std columns."""
    return {"version": SCHEMA_VERSION, "wavelength_nm": [int(w) for w in WAVELENGTHS_NM],
            "settings": list(SET_COLS), "std": list(STD_COLS)}


def data_sha256(rows: History) -> str:
    """SHA-256 of the rows a model saw: every schema column in order, numbers as float64 bytes,
    text as UTF-8; independent of the file format the rows came from."""
    h = hashlib.sha256()
    for name, col in rows.columns().items():
        h.update(name.encode())
        if col.dtype == object:
            h.update("\x1f".join(str(x) for x in col).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(col, dtype=np.float64).tobytes())
    return h.hexdigest()


def cycle_dir(models_dir, cycle_id: int, kind: str) -> Path:
    return Path(models_dir) / f"cycle_{int(cycle_id):04d}" / kind


def save(models_dir, cycle_id: int, kind: str, model, hparams, metrics, train_rows: History) -> Path:
    """Write ``model`` (its ``state_dict()``, which carries the normaliser) for ``cycle_id``
    with its hyperparameters, validation ``metrics`` and the hash of ``train_rows``."""
    if getattr(model, "kind", kind) != kind:
        raise ValueError(f"save: model is a {model.kind}, not a {kind}")
    d = cycle_dir(models_dir, cycle_id, kind)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    atomic_bytes(d / "model.pt", data, fsync=True)
    meta = {
        "kind": kind, "cycle_id": int(cycle_id), "hparams": resolve_hparams(kind, hparams),
        "metrics": {k: float(v) for k, v in dict(metrics).items() if isinstance(v, (int, float, np.number))},
        "schema": schema_descriptor(), "data_sha256": data_sha256(train_rows),
        "n_train": len(train_rows), "last_run_in_cycle": int(np.max(train_rows.run_in_cycle)),
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_bytes(d / "model.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode(), fsync=True)
    return d


def save_fit(models_dir, cycle_id: int, fit_result, train_rows: History) -> Path:
    """``save`` for a ``fitting.FitResult``."""
    return save(models_dir, cycle_id, fit_result.model.kind, fit_result.model, fit_result.hparams,
                fit_result.metrics, train_rows)


def check_schema(meta: dict, where: str, history: History | None = None) -> None:
    """Raise ValueError when a stored model does not match this code's data schema (or, with
    ``history``, that history's wavelength grid and columns)."""
    want = schema_descriptor()
    got = meta.get("schema", {})
    problems = []
    if got.get("version") != want["version"]:
        problems.append(f"schema version {got.get('version')!r}, expected {want['version']!r}")
    if got.get("wavelength_nm") != want["wavelength_nm"]:
        wl = got.get("wavelength_nm") or []
        problems.append(f"wavelength grid of {len(wl)} points"
                        + (f" {wl[0]}..{wl[-1]} nm" if wl else "")
                        + f", expected {len(want['wavelength_nm'])} points 380..780 nm in 5 nm steps")
    for key in ("settings", "std"):
        if got.get(key) != want[key]:
            problems.append(f"{key} columns {got.get(key)}, expected {want[key]}")
    if history is not None and history.R_F.shape[1] != len(want["wavelength_nm"]):
        problems.append(f"the history has {history.R_F.shape[1]} wavelengths per curve")
    if problems:
        raise ValueError(f"{where}: model does not match the data schema: " + "; ".join(problems)
                         + ". Refit it on data in the current schema (coating.models.fit_cycles).")


def load(models_dir, cycle_id: int, kind: str, history: History | None = None):
    """Load one model (``torch.load(weights_only=True)``), checked against the schema and its
    recorded hash. Returns the model (eval mode) with ``registry_meta`` (the JSON) attached."""
    d = cycle_dir(models_dir, cycle_id, kind)
    if not (d / "model.json").exists() or not (d / "model.pt").exists():
        raise ValueError(f"{d}: no {kind} model for cycle {cycle_id} (model.json and model.pt expected)")
    try:
        meta = json.loads((d / "model.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{d}/model.json: not JSON ({e}); expected the model.json written with model.pt") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{d}/model.json: expected a JSON object with kind, hparams, schema, model_sha256")
    if meta.get("kind") != kind:
        raise ValueError(f"{d}/model.json: kind {meta.get('kind')!r}, expected {kind!r}")
    check_schema(meta, str(d), history)
    data = (d / "model.pt").read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("model_sha256"):
        raise ValueError(f"{d}/model.pt: SHA-256 differs from model.json's model_sha256 "
                         f"(a partial or foreign write); refit or restore the pair")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
        model = build_model_from_state(kind, meta["hparams"], state)
    except Exception as e:  # noqa: BLE001 - any failure here means the pair is not ours
        # torch's own message advises weights_only=False, i.e. running the file's code: never that.
        raise ValueError(f"{d}/model.pt: not a model file written by coating ({type(e).__name__}); "
                         f"refit the cycle (coating_tune or coating.models.fit_cycles) or restore the pair") from None
    model.registry_meta = meta
    return model


def list_models(models_dir, kind: str | None = None) -> list[tuple[int, str]]:
    """``(cycle_id, kind)`` of every complete entry, sorted."""
    out = []
    for d in sorted(Path(models_dir).glob("cycle_*/*")):
        if (d / "model.json").exists() and (kind is None or d.name == kind):
            try:
                out.append((int(d.parent.name.split("_")[1]), d.name))
            except ValueError:
                continue
    return out


def load_all(models_dir, kind: str, history: History | None = None) -> dict:
    """cycle_id -> model for every cycle with a ``kind`` model."""
    if not Path(models_dir).is_dir():
        raise ValueError(f"{models_dir}: no such model registry directory")
    return {c: load(models_dir, c, kind, history) for c, _ in list_models(models_dir, kind)}


def stored_model_sha256(models_dir, cycle_id: int, kind: str) -> str | None:
    """The ``model_sha256`` recorded in a registry entry's model.json, or None when there is no
    readable entry (a sweep is then fitted again rather than reused)."""
    import json

    try:
        return json.loads((cycle_dir(models_dir, cycle_id, kind) / "model.json").read_text())["model_sha256"]
    except (OSError, ValueError, KeyError):
        return None
