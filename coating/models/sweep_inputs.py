"""What one tuning sweep (cycle, kind) was started with, so it is resumed only on the same inputs.

The engineers' routine is to append new runs to the history and run the same sweep command
again. Ray Tune's ``Tuner.restore`` resumes whatever experiment sits at a path: restoring a
finished experiment after its data changed silently reuses the old trials. So a sweep is keyed
on its inputs, not on its name:

- ``inputs``: ``rows_sha256`` (``registry.data_sha256`` of that cycle's own rows, in run
  order, so runs added to other cycles do not change it), ``cycle_id``, ``kind``, the search
  ``space`` (plain data, as in ``coating.models.hparams.SEARCH_SPACE``), ``num_samples``, and any
  ``extra`` setting that changes the fit (e.g. model1's pretraining sample count);
- ``key``: the first 12 hex digits of the SHA-256 of the inputs as canonical JSON. The
  experiment's name carries the key, so changed inputs give a new experiment (the old one is
  kept, never restored);
- the record ``<experiment>.inputs.json`` beside the experiment: ``{"key", "inputs",
  "started", "result"}``, written when the sweep starts (``result`` null) and again when it
  has finished (``result``: its summary row, with the registry's ``model_sha256``). A sweep is
  resumed only when the recorded inputs equal the current ones; a finished one whose model is
  still the registry's is reused without starting Tune at all.

No Ray here: the Tune job (``ray_jobs/coating_tune.py``) does the I/O and calls these.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json

import numpy as np

from coating.line.schema import History

__all__ = ["RECORD_SUFFIX", "sweep_inputs", "inputs_key", "record_text", "parse_record", "differences",
           "reusable"]

RECORD_SUFFIX = ".inputs.json"
KEY_HEX = 12  # 48 bits: a chance collision among a site's few hundred sweeps is negligible


def sweep_inputs(history: History, cycle_id: int, kind: str, space: dict, num_samples: int,
                 **extra) -> dict:
    """The inputs of the sweep of (``cycle_id``, ``kind``) on ``history``: plain JSON data."""
    from coating.line.history_rows import select_rows
    from coating.models.registry import data_sha256

    idx = np.flatnonzero(history.cycle_id == cycle_id)
    if not len(idx):
        raise ValueError(f"cycle {cycle_id}: no runs in the history")
    idx = idx[np.argsort(history.run_in_cycle[idx], kind="stable")]
    rows = select_rows(history, idx)
    # JSON round trip: tuples become lists, so a recorded space compares equal to a fresh one.
    return json.loads(json.dumps({
        "rows_sha256": data_sha256(rows), "n_rows": int(len(idx)), "cycle_id": int(cycle_id),
        "kind": str(kind), "space": space, "num_samples": int(num_samples), "extra": extra,
    }, sort_keys=True))


def inputs_key(inputs: dict) -> str:
    """Short hex key of ``inputs`` (canonical JSON, SHA-256)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:KEY_HEX]


def record_text(inputs: dict, result: dict | None = None, started: str | None = None) -> str:
    """The record file's text (JSON); ``started`` defaults to now (UTC, ISO 8601)."""
    started = started or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"key": inputs_key(inputs), "inputs": inputs, "started": started, "result": result},
                      indent=1, sort_keys=True, default=str) + "\n"


def parse_record(text: str, where: str) -> dict:
    """Parse a record; raises ValueError naming ``where`` when it is not one."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not a sweep inputs record (invalid JSON: {e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("inputs"), dict) or "key" not in rec:
        raise ValueError(f"{where}: not a sweep inputs record (expected keys 'key', 'inputs', 'started', 'result')")
    return rec


def differences(recorded: dict, inputs: dict) -> list[str]:
    """Names of the inputs that differ (for the message saying why a new sweep starts)."""
    names = {"rows_sha256": "the cycle's rows", "n_rows": "the number of runs", "space": "the search space",
             "num_samples": "the sample count", "cycle_id": "the cycle", "kind": "the kind", "extra": "settings"}
    return [names.get(k, k) for k in sorted(set(recorded) | set(inputs)) if recorded.get(k) != inputs.get(k)]


def reusable(record: dict | None, inputs: dict, registry_model_sha256: str | None) -> bool:
    """True when the recorded sweep finished on exactly ``inputs`` and its best model is still the
    registry's (same ``model_sha256``): then nothing needs fitting or saving again."""
    return (record is not None and record.get("inputs") == inputs and isinstance(record.get("result"), dict)
            and registry_model_sha256 is not None
            and record["result"].get("model_sha256") == registry_model_sha256)
