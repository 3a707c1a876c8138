"""Checkpoints and final models of the SEVI regressor.

Checkpoint dir ``<out_dir>/checkpoint_<step:06d>/model.pt`` (written atomically) holds
``{"model": state_dict, "optimizer": state_dict, "step": int, "config": dict (resolved
TrainConfig), "target_mean": (T,), "target_std": (T,), "stream": {"batches", "sha256"} (the
batches the weights have seen: ``sevi.regressor.batches.chain_seed``)}``: plain types and tensors only, so
``torch.load(path, weights_only=True)`` reads it. The final model (``save_final_model``) is the
same dict without the optimizer, plus ``config.json`` beside it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from sevi.io.atomic import atomic_path
from sevi.regressor.model import ResNetRegressor
from sevi.regressor.train_config import TrainConfig, config_from_dict


def load_state(model: ResNetRegressor, state: dict) -> None:
    """load_state_dict, accepting files written before ``sd_scale`` existed (then uncalibrated)."""
    state = dict(state)
    state.setdefault("sd_scale", torch.ones_like(model.sd_scale))
    model.load_state_dict(state)


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: ResNetRegressor, opt, step: int, cfg: TrainConfig, out_dir: str | Path,
                    stream: dict | None = None) -> str:
    """``stream``: the record of the batches the weights have seen (``sevi.regressor.batches.chain_seed``)."""
    d = Path(out_dir) / f"checkpoint_{step:06d}"
    _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                  "config": dataclasses.asdict(cfg), "target_mean": model.target_mean.cpu(),
                  "target_std": model.target_std.cpu(), **({"stream": stream} if stream else {})}, d / "model.pt")
    return str(d)


def save_final_model(model: ResNetRegressor, cfg: TrainConfig, path: str | Path, stream: dict | None = None) -> str:
    """Write ``path/model.pt`` and ``path/config.json`` (each atomically); returns the model.pt path.
    ``stream``: the record of the batches the weights have seen, kept in model.pt."""
    path = Path(path)
    _atomic_save({"model": model.state_dict(), "config": dataclasses.asdict(cfg),
                  "target_mean": model.target_mean.cpu(), "target_std": model.target_std.cpu(),
                  **({"stream": stream} if stream else {})}, path / "model.pt")
    with atomic_path(path / "config.json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return str(path / "model.pt")


def _model_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


def build_model(cfg: TrainConfig) -> ResNetRegressor:
    """The regressor a config describes: ResNet34's layout by default (``cfg.blocks``)."""
    return ResNetRegressor([int(b) for b in cfg.blocks], cfg.data.n_terms, cfg.data.features.shape[0], cfg.width,
                           cfg.stem_stride)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ResNetRegressor, TrainConfig]:
    """A final model dir or a checkpoint dir (or its model.pt) -> (model in eval mode, its config)."""
    f = _model_file(path)
    if not f.exists():
        raise FileNotFoundError(f"{f}: no such model file")
    ck = torch.load(f, map_location="cpu", weights_only=True)
    cfg = config_from_dict(ck["config"])
    model = build_model(cfg)
    load_state(model, ck["model"])
    return model.to(device).eval(), cfg


def checkpoint_step(checkpoint_dir: str) -> int:
    """The optimizer step a checkpoint directory was written at."""
    return int(torch.load(Path(checkpoint_dir) / "model.pt", map_location="cpu", weights_only=True)["step"])
