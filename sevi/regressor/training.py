"""SEVI regressor training: the one explicit training loop (plain PyTorch).

No Ray here. ``ray_jobs/`` (and ``sevi.cli.train`` without Ray) call ``train_loop(cfg,
next_batch, ctx)``; Ray enters only through ``LoopContext`` (``wrap_model`` = prepare_model,
``report`` = ray.train.report, ``resume_dir`` = ray.train.get_checkpoint()).

The concepts the loop uses live in their own files: the config and presets
(``sevi.regressor.train_config``), batches and seeds (``sevi.regressor.batches``), loss and
validation (``sevi.regressor.evaluation``), checkpoints and models on disk
(``sevi.regressor.checkpoints``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sevi.regressor.batches import chain_seed, target_stats
from sevi.regressor.checkpoints import _model_file, build_model, load_state, save_checkpoint
from sevi.regressor.evaluation import angular_figure, calibrate_uncertainties, evaluate, loss_fn, make_validation_set
from sevi.regressor.train_config import DATA_FIELDS, TrainConfig, changed_fields, config_from_dict
from sevi.runtime.errors import InputError

__all__ = ["LoopContext", "lr_at", "refuse_changed_resume", "train_loop"]


@dataclass
class LoopContext:
    """How the loop meets the outside world (Ray Train or a plain process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m  # Ray: ray.train.torch.prepare_model
    # report(metrics, checkpoint_dir | None): called on EVERY rank the same number of times (a
    # barrier in Ray Train); the checkpoint dir is passed from rank 0 only.
    report: Callable[[dict, str | None], None] = lambda metrics, ckpt: None
    resume_dir: str | None = None  # a checkpoint dir to resume from (step, model, optimizer)
    log_dir: str | None = None  # TensorBoard directory (rank 0 writes)
    out_dir: str = "."  # where checkpoint_<step> dirs go (rank 0 writes)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine from lr to min_lr at cfg.steps (nanoGPT's get_lr)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * t)) * (cfg.lr - cfg.min_lr)


def refuse_changed_resume(saved: TrainConfig, cfg: TrainConfig, where) -> None:
    """Raise InputError naming every data or model-shape field a resume would change: the
    checkpoint's weights and its batch stream belong to the saved values (optimiser, schedule and
    bookkeeping fields may change on a resume: the loop continues with the new ones)."""
    changed = changed_fields(saved, cfg)
    if changed:
        def value(c, n):
            return getattr(c.data, n) if n in DATA_FIELDS else getattr(c, n)
        what = ", ".join(f"{n} {value(saved, n)!r} -> {value(cfg, n)!r}" for n in changed)
        raise InputError(f"{where}: the checkpoint was written with other data or model-shape fields ({what}); "
                         f"expected the same values to resume, or a new run (another --name or output folder)")


def train_loop(cfg: TrainConfig, next_batch: Callable[[int], dict], ctx: LoopContext = LoopContext()) -> dict:
    """Train from step 0 (or ctx.resume_dir's step) to cfg.steps. ``next_batch(step)`` gives that
    step's batch for this rank (with its ``"seed"``, when the feed knows it). Returns {"step", "metrics"
    (last validation, rank 0), "checkpoint" (last dir written, rank 0, or None), "model" (the unwrapped
    model; on rank 0 with its error bars calibrated on the validation set, which the last checkpoint is
    not: save it with save_final_model), "stream" (the batches the weights have seen, carried through
    checkpoints: ``sevi.regressor.batches.chain_seed``)}."""
    torch.manual_seed(cfg.seed)
    dev, master = torch.device(ctx.device), ctx.rank == 0
    model = build_model(cfg)
    model.set_target_stats(*target_stats(cfg))
    if cfg.init_from:  # fine-tuning (refinement): weights AND the normalisation they were trained with
        load_state(model, torch.load(_model_file(cfg.init_from), map_location="cpu", weights_only=True)["model"])
    model.to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step = 0
    stream = {"batches": 0, "sha256": ""}  # the batches the weights have seen (chain_seed)
    if ctx.resume_dir:
        ck = torch.load(_model_file(ctx.resume_dir), map_location="cpu", weights_only=True)
        refuse_changed_resume(config_from_dict(ck["config"]), cfg, ctx.resume_dir)
        load_state(model, ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step = int(ck["step"])
        stream = dict(ck.get("stream") or {"batches": step, "sha256": None})  # older checkpoints: unknown
    net = ctx.wrap_model(model)
    amp = dev.type == "cuda" and cfg.amp != "none"
    amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.amp == "fp16")
    val = make_validation_set(cfg, dev) if master else None
    writer = None
    if master and ctx.log_dir:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(ctx.log_dir)
    metrics, last_ckpt, wait, t_last, n_img = {}, None, 0.0, time.perf_counter(), 0
    while step < cfg.steps:
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        batch = next_batch(step)
        stream = chain_seed(stream, batch.get("seed"))
        wait += time.perf_counter() - t0
        x, y = batch["x"].to(dev, non_blocking=True), batch["y"].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            out = net(x)
        loss, parts = loss_fn(model, out.float(), y, cfg)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        n_img += len(x)
        metrics = {"step": step, "loss": loss.item(), "lr": lr, **parts}
        if writer and (step % cfg.log_every == 0 or step == cfg.steps):
            dt = time.perf_counter() - t_last
            for k in ("loss", "lr", "beta_sq_distance", "radius_mse", "nll"):
                writer.add_scalar(f"train/{k}", metrics[k], step)
            writer.add_scalar("perf/images_per_s", n_img * ctx.world_size / dt, step)
            writer.add_scalar("perf/generator_wait_fraction", wait / dt, step)
            writer.add_scalar("perf/generator_wait_s_per_step", wait / max(1, n_img // len(x)), step)
            wait, t_last, n_img = 0.0, time.perf_counter(), 0
        evaluating, saving = step % cfg.eval_every == 0 or step == cfg.steps, step % cfg.checkpoint_every == 0 or step == cfg.steps
        if not (evaluating or saving):
            continue
        ckpt = None
        if master and evaluating:
            vm, p = evaluate(model, val)
            metrics.update(vm)
            if writer:
                for k, v in vm.items():
                    writer.add_scalar(k, v, step)
                writer.add_images("val/inputs", (val["x"][:4] / val["x"][:4].amax((1, 2, 3), keepdim=True)).cpu(), step)
                writer.add_figure("val/angular_distributions", angular_figure(p["beta"], val["beta"]), step)
                writer.flush()
        if master and saving:
            ckpt = last_ckpt = save_checkpoint(model, opt, step, cfg, ctx.out_dir, stream)
        ctx.report(metrics, ckpt)
    if master and val is not None:  # error bars calibrated on the fixed validation set
        scale = calibrate_uncertainties(model, val)
        if writer:
            writer.add_text("val/sd_scale", ", ".join(f"{v:.3g}" for v in scale.tolist()), step)
    if writer:
        writer.close()
    return {"step": step, "metrics": metrics, "checkpoint": last_ckpt, "model": model, "stream": stream}
