"""SEVI regressor training: config, batches, and the one explicit training loop (plain PyTorch).

No Ray here. ``ray_jobs/`` (and ``sevi.train_local`` without Ray) call ``train_loop(cfg,
next_batch, ctx)``; Ray enters only through ``LoopContext`` (``wrap_model`` = prepare_model,
``report`` = ray.train.report, ``resume_dir`` = ray.train.get_checkpoint()).

Batches: ``make_batch(generator, cfg, seed)`` depends only on (cfg, seed) and the device: it draws
``cfg.batch_size`` parameter sets from the generator's prior with ``seed``, renders them at the
representation's grid (rendering costs per electron, not per pixel, and a histogram at G is
exactly the rebinned histogram at any multiple of G) and builds the model inputs. The training
stream uses ``batch_seed(cfg, step, rank, world_size)``, so a resumed run continues the same
stream; the validation set uses seeds no training step can reach.

Checkpoint dir ``<out_dir>/checkpoint_<step:06d>/model.pt`` (written atomically) holds
``{"model": state_dict, "optimizer": state_dict, "step": int, "config": dict (resolved
TrainConfig), "target_mean": (T,), "target_std": (T,)}``: plain types and tensors only, so
``torch.load(path, weights_only=True)`` reads it. The final model (``save_final_model``) is the
same dict without the optimizer, plus ``config.json`` beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from sevi.atomic import atomic_path
from sevi.features import Features
from sevi.metric import distance
from sevi.model import ResNetRegressor, resnet34_regressor, targets_from_params
from sevi.overrides import apply_overrides
from sevi.prior import Prior, PriorConfig

SEPARATION = 0.03  # |R1 - R2| at or above which shells count as "separated" (docs/conventions.md)


@dataclass(frozen=True)
class TrainConfig:
    # -- data -------------------------------------------------------------------------------
    grid: int = 64  # G: images are rendered at (and inputs rebinned exactly to) G x G
    representation: str = "polar"  # model input, features.py: "polar" or "fold" (G/2 x G/2 quadrant); polar measured ahead, docs/benchmarks_history.md
    n_r: int = 32  # polar: radial samples over r in (0, 1) (= G/2: one per quadrant pixel)
    n_theta: int = 32  # polar: angular samples over theta in (0, pi/2)
    scale: str = "sqrt"  # "sqrt" or "linear" pixel scaling (features.py)
    electrons: tuple[int, int] = (40_000, 120_000)  # electrons per shell, uniform in [low, high] (1e5 held-out inside)
    n_terms: int = 12  # L: betas per shell (beta_2 .. beta_2L)
    refine_answer: str = ""  # refinement: an Answer HDF5 file (sevi predict's output); "" = default prior
    refine_width: float = 3.0  # refinement: prior box = prediction +- refine_width * its 1-sigma
    init_from: str = ""  # fine-tune: load model weights (and target normalisation) from this model.pt / dir
    target_stats_draws: int = 2000  # prior draws for the target mean/std (once per run, seeded; ~2 s)
    # The direct path (sevi/direct.py): Gaussian blur, detector units, applied to the rendered
    # histograms before the features, matching the camera spot (FrameModel.sigma_mean = 0.015). A model
    # with spot_blur > 0 reads summed frames (sevi analyze --path direct); 0 = clean histograms, the
    # events path. No background noise is added: sevi/direct.py shows it is < 0.5% of the Poisson noise.
    spot_blur: float = 0.0
    # How training images are drawn (sevi/expected_renderer.py): "itm" samples every electron (the
    # reference); "poisson" draws each pixel around the exact expected image, the same distribution at
    # a cost set by the pixels, not the electrons (BENCHMARKS.md, SEVI forward model).
    render: str = "itm"
    # -- model ------------------------------------------------------------------------------
    width: int = 16  # ResNet34 base width (64 = the paper's ResNet34, ~21 M parameters)
    stem_stride: int = 1  # 1: 3x3 stem, no maxpool (small inputs); 2: torchvision's 7x7/2 + maxpool
    # -- optimisation -----------------------------------------------------------------------
    batch_size: int = 32  # images per step per rank
    steps: int = 600  # optimizer steps in all (a resumed run stops at the same step)
    lr: float = 2e-3  # peak learning rate (AdamW)
    min_lr: float = 5e-5  # cosine floor
    warmup_steps: int = 20  # linear warmup from 0
    weight_decay: float = 1e-4  # AdamW, applied to weight matrices / conv kernels only
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    radius_loss_weight: float = 0.1  # weight of the normalised-MSE of R and sigma_R beside the beta loss
    nll_weight: float = 0.1  # weight of the Gaussian NLL that trains the log-variance head
    amp: str = "bf16"  # autocast dtype on CUDA: "bf16", "fp16" or "none" (CPU always runs fp32)
    seed: int = 0  # model init and the training batch stream
    # -- evaluation, checkpoints ------------------------------------------------------------
    val_images: int = 256  # fixed validation set size (made once, rank 0)
    val_seed: int = 12345  # seed of the validation set
    eval_every: int = 100  # steps between validations (and TensorBoard images / figures)
    checkpoint_every: int = 200  # steps between checkpoints
    log_every: int = 10  # steps between scalar logs of the training loss

    def __post_init__(self):
        Features(self.representation, self.grid, self.n_r, self.n_theta, self.scale)  # validates
        if not 0 < self.electrons[0] <= self.electrons[1]:
            raise ValueError(f"electrons must satisfy 0 < low <= high, got {self.electrons}")
        from sevi.expected_renderer import RENDER_BACKENDS
        if self.render not in ("itm", "poisson"):
            raise ValueError(f"render must be 'itm' or 'poisson' for training (of {RENDER_BACKENDS}), got {self.render!r}")
        if not self.spot_blur >= 0:
            raise ValueError(f"spot_blur must be >= 0 (detector units), got {self.spot_blur}")
        if self.refine_width <= 0:
            raise ValueError(f"refine_width must be positive, got {self.refine_width}")
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"amp must be 'bf16', 'fp16' or 'none', got {self.amp!r}")
        for name in ("batch_size", "steps", "val_images", "eval_every", "checkpoint_every", "log_every", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def features(self) -> Features:
        return Features(self.representation, self.grid, self.n_r, self.n_theta, self.scale)


PRESETS: dict[str, TrainConfig] = {
    # 600 steps, in-process generation, 2-core CPU: 617 s alone with 1 thread on a shared box, held-out ratio 0.40
    # to the prior mean (BENCHMARKS.md, section 2; docs/benchmarks_history.md).
    "cpu-smoke": TrainConfig(),  # the defaults above are this preset
    # Full scale, one A100 per rank: the notes' electron counts, width 64, the measured winner
    # "polar" on a grid-512 quadrant (pixel 0.0039 < the shells' sigma_R of 0.005-0.009; the
    # course's 1024 images rebin to it exactly), 256 r x 256 theta samples (1.4 px apart at
    # r = 0.9). Not yet run on a GPU (BENCHMARKS.md, section 8).
    "a100": TrainConfig(grid=512, n_r=256, n_theta=256, electrons=(1_800_000, 2_500_000), width=64,
                        stem_stride=2, batch_size=64, steps=60_000, lr=1e-3, min_lr=1e-5, warmup_steps=1000,
                        val_images=1024, eval_every=1000, checkpoint_every=2000, log_every=50),
    # The course's counts (1.8-2.5e6 electrons per shell, images read at 1024^2 and rebinned exactly to
    # 128^2) on a 2-core CPU in under 30 minutes: the Poisson renderer (cost set by the pixels, ~90x the
    # ITM generator at these counts) and a 64 r x 32 theta polar input. Its job is to start the
    # likelihood refinement (sevi/fit.py) in the right optimum (BENCHMARKS.md, SEVI refinement).
    "cpu-course": TrainConfig(grid=128, n_r=64, n_theta=32, electrons=(1_800_000, 2_500_000), render="poisson",
                              steps=800, val_images=128, eval_every=100, checkpoint_every=200),
    # The test suite's config: seconds on a CPU.
    "tiny": TrainConfig(grid=32, representation="fold", electrons=(2000, 4000), width=4, batch_size=8, steps=30,
                        lr=3e-3, warmup_steps=3, val_images=16, eval_every=10, checkpoint_every=10, log_every=5,
                        target_stats_draws=200),
}


def resolve_config(preset: str, overrides: dict[str, str] | None = None) -> TrainConfig:
    """A preset with ``--field value`` overrides applied, each parsed to the field's type
    (``sevi.overrides``: unknown fields and wrong types refused)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return apply_overrides(PRESETS[preset], overrides)


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of dataclasses.asdict (lists back to tuples; unknown keys refused)."""
    hints = typing.get_type_hints(TrainConfig)
    unknown = set(d) - set(hints)
    if unknown:
        raise ValueError(f"config has unknown fields {sorted(unknown)}")
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# -- priors, generators, batches ----------------------------------------------------------------
def prior_config(cfg: TrainConfig) -> PriorConfig:
    """The training prior: the notes' prior with cfg.electrons, narrowed when cfg.refine_answer."""
    base = PriorConfig().with_electrons(*cfg.electrons)
    if cfg.refine_answer:
        from sevi.refine import narrow_prior_from_file
        return narrow_prior_from_file(base, cfg.refine_answer, cfg.refine_width)
    return base


def render_grid(cfg: TrainConfig) -> int:
    """The grid training images are rendered at: cfg.grid, or with cfg.spot_blur > 0 the multiple of it
    on which the blur is well sampled (sevi.direct.blur_render_grid); the features rebin exactly to cfg.grid."""
    from sevi.direct import blur_render_grid
    return blur_render_grid(cfg.grid, cfg.spot_blur)


def make_generator(cfg: TrainConfig, device: str | torch.device = "auto"):
    """The renderer of cfg.render ("itm": SeviGenerator; "poisson": ExpectedRenderer) at render_grid(cfg)."""
    from sevi.expected_renderer import make_renderer
    from sevi.generator import GeneratorConfig
    return make_renderer(cfg.render, GeneratorConfig(grid=render_grid(cfg)), device, prior_config(cfg))


def stream_seed(base: int, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the batch that ``rank`` trains on at ``step`` of the stream ``base``: distinct across
    steps and ranks, and the same in every feed (in-process or the pool), so a resumed run continues
    the same data. Validation seeds lie at val_seed * 2^32 + 2^31 + i, apart from these."""
    return int(base) * 2**32 + step * world_size + rank


def batch_seed(cfg: TrainConfig, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the training batch of (step, rank): :func:`stream_seed` of ``cfg.seed``."""
    return stream_seed(cfg.seed, step, rank, world_size)


def make_batch(generator, cfg: TrainConfig, seed: int) -> dict[str, Tensor]:
    """Pure: (cfg, seed) -> {x (B, C, H, W) float32, y (B, T) float32 physical targets,
    beta (B, 2, L) float32, R (B, 2) float32, sigma_R (B, 2) float32}, on the generator's device.

    With cfg.spot_blur > 0 the histograms are rendered at render_grid(cfg) (a multiple of cfg.grid; the
    same electrons, so the rebinned histogram is the one cfg.grid would give), blurred by spot_blur
    (sevi.direct.blur_images) and then rebinned by the features: the mean of a background-subtracted
    sum of camera frames (sevi.direct.direct_image)."""
    if generator.config.grid != render_grid(cfg):
        raise ValueError(f"generator renders {generator.config.grid} x {generator.config.grid}, this config needs "
                         f"{render_grid(cfg)} (make_generator(cfg) builds the right one)")
    params = generator.prior(cfg.batch_size, seed).params
    images = generator.render(params, seed).images  # (B, G', G') int32
    if cfg.spot_blur > 0:
        from sevi.direct import blur_images
        images = blur_images(images, cfg.spot_blur)  # (B, G', G') float32
    dev = images.device
    beta, R, sigma_R = (t.to(dev, torch.float32) for t in (params.beta, params.R, params.sigma_R))
    return {"x": cfg.features(images), "y": targets_from_params(beta, R, sigma_R), "beta": beta, "R": R,
            "sigma_R": sigma_R}


@functools.lru_cache(maxsize=8)
def _target_stats(pc: PriorConfig, n: int, seed: int) -> tuple[Tensor, Tensor]:
    p = Prior(pc)(n, seed).params
    y = targets_from_params(p.beta, p.R, p.sigma_R)  # (n, T) float64
    return y.mean(0).float(), y.std(0).clamp_min(1e-6).float()


def target_stats(cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    """Target mean and std (T,) of the training prior: once, from a fixed seed, never a batch."""
    return _target_stats(prior_config(cfg), cfg.target_stats_draws, 7)


# -- loss, evaluation -------------------------------------------------------------------------
def loss_fn(model: ResNetRegressor, out: Tensor, y: Tensor, cfg: TrainConfig) -> tuple[Tensor, dict[str, float]]:
    """The notes' loss (the metric without the square root) on betas in physical units, plus a
    normalised MSE on R and sigma_R, plus the Gaussian NLL of the log-variance head on the
    *detached* mean (so the error bars never pull the mean away from the Distance objective)."""
    T, L = model.n_targets, model.n_terms
    mu, logvar = out[:, :T], out[:, T:].clamp(-20, 10)
    yn = (y - model.target_mean) / model.target_std  # (B, T)
    w = 2.0 / (4 * torch.arange(1, L + 1, device=y.device, dtype=y.dtype) + 1)  # metric weights 2/(4i+1)
    wb = (w.repeat(2) * model.target_std[:2 * L] ** 2)  # in normalised units
    beta_loss = ((mu[:, :2 * L] - yn[:, :2 * L]) ** 2 * wb).sum(1).mean()
    radius_loss = ((mu[:, 2 * L:] - yn[:, 2 * L:]) ** 2).mean()
    nll = 0.5 * (logvar + (yn - mu.detach()) ** 2 * torch.exp(-logvar)).mean()
    loss = beta_loss + cfg.radius_loss_weight * radius_loss + cfg.nll_weight * nll
    return loss, {"beta_sq_distance": beta_loss.item(), "radius_mse": radius_loss.item(), "nll": nll.item()}


def make_validation_set(cfg: TrainConfig, device) -> dict[str, Tensor]:
    gen = make_generator(cfg, device)
    parts = [make_batch(gen, cfg, cfg.val_seed * 2**32 + 2**31 + i)
             for i in range(math.ceil(cfg.val_images / cfg.batch_size))]
    return {k: torch.cat([p[k] for p in parts])[:cfg.val_images] for k in parts[0]}


@torch.no_grad()
def predict(model: ResNetRegressor, x: Tensor, batch_size: int = 64) -> dict[str, Tensor]:
    """Decoded predictions (model.decode's keys) for inputs x (N, C, H, W), in eval mode."""
    was = model.training
    model.eval()
    outs = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    return model.decode(torch.cat(outs))


def evaluate(model: ResNetRegressor, val: dict[str, Tensor]) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Validation Distance (all / separated / overlapping shells), per-coefficient RMS errors,
    R error and the 1-sigma coverage of the error bars. Returns (metrics, predictions)."""
    p = predict(model, val["x"])
    d = distance(p["beta"].double(), val["beta"].double())  # (N,)
    sep = (val["R"][:, 1] - val["R"][:, 0]).abs() >= SEPARATION
    m = {"val/distance": d.mean().item(),
         "val/distance_separated": d[sep].mean().item() if sep.any() else float("nan"),
         "val/distance_overlapping": d[~sep].mean().item() if (~sep).any() else float("nan"),
         "val/R_rmse": (p["R"] - val["R"]).pow(2).mean().sqrt().item(),
         "val/coverage_1sigma_beta": ((p["beta"] - val["beta"]).abs() <= p["beta_sd"]).float().mean().item(),
         "val/coverage_1sigma_R": ((p["R"] - val["R"]).abs() <= p["R_sd"]).float().mean().item()}
    rms = (p["beta"] - val["beta"]).pow(2).mean(0).sqrt()  # (2, L)
    for j in range(2):
        for i in range(rms.shape[1]):
            m[f"val_coef/beta{2 * i + 2}_shell{j}"] = rms[j, i].item()
    return m, p


@torch.no_grad()
def calibrate_uncertainties(model: ResNetRegressor, val: dict[str, Tensor]) -> Tensor:
    """Set model.sd_scale so that each target's z-scores on the validation set have unit RMS
    (temperature scaling of the heteroscedastic head); returns the scale (T,)."""
    model.sd_scale.fill_(1.0)
    p = predict(model, val["x"])
    mu = targets_from_params(p["beta"], p["R"], p["sigma_R"])
    sd = targets_from_params(p["beta_sd"], p["R_sd"], p["sigma_R_sd"])
    scale = ((val["y"] - mu) / sd).pow(2).mean(0).sqrt()  # (T,)
    model.sd_scale.copy_(scale)
    return scale


def load_state(model: ResNetRegressor, state: dict) -> None:
    """load_state_dict, accepting files written before ``sd_scale`` existed (then uncalibrated)."""
    state = dict(state)
    state.setdefault("sd_scale", torch.ones_like(model.sd_scale))
    model.load_state_dict(state)


def angular_figure(pred_beta: Tensor, true_beta: Tensor, n: int = 4):
    """Matplotlib figure: predicted vs true I(cos theta) of both shells for the first n images."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sevi.legendre import angular_density
    c = torch.linspace(-1, 1, 201, dtype=torch.float64)
    n = min(n, len(true_beta))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        for j, col in ((0, "C0"), (1, "C3")):
            ax.plot(c, angular_density(c, true_beta[k, j].double().cpu()), col, label=f"true {j}")
            ax.plot(c, angular_density(c, pred_beta[k, j].double().cpu()), col + "--", label=f"pred {j}")
        ax.set_xlabel("cos theta")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# -- checkpoints ------------------------------------------------------------------------------
def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: ResNetRegressor, opt, step: int, cfg: TrainConfig, out_dir: str | Path) -> str:
    d = Path(out_dir) / f"checkpoint_{step:06d}"
    _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                  "config": dataclasses.asdict(cfg), "target_mean": model.target_mean.cpu(),
                  "target_std": model.target_std.cpu()}, d / "model.pt")
    return str(d)


def save_final_model(model: ResNetRegressor, cfg: TrainConfig, path: str | Path) -> str:
    """Write ``path/model.pt`` and ``path/config.json`` (each atomically); returns the model.pt path."""
    path = Path(path)
    _atomic_save({"model": model.state_dict(), "config": dataclasses.asdict(cfg),
                  "target_mean": model.target_mean.cpu(), "target_std": model.target_std.cpu()}, path / "model.pt")
    with atomic_path(path / "config.json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return str(path / "model.pt")


def _model_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


def build_model(cfg: TrainConfig) -> ResNetRegressor:
    return resnet34_regressor(cfg.n_terms, cfg.features.shape[0], cfg.width, cfg.stem_stride)


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


# -- the loop ---------------------------------------------------------------------------------
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


def train_loop(cfg: TrainConfig, next_batch: Callable[[int], dict], ctx: LoopContext = LoopContext()) -> dict:
    """Train from step 0 (or ctx.resume_dir's step) to cfg.steps. ``next_batch(step)`` gives that
    step's batch for this rank. Returns {"step", "metrics" (last validation, rank 0), "checkpoint"
    (last dir written, rank 0, or None), "model" (the unwrapped model; on rank 0 with its error bars
    calibrated on the validation set, which the last checkpoint is not: save it with save_final_model)}."""
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
    if ctx.resume_dir:
        ck = torch.load(_model_file(ctx.resume_dir), map_location="cpu", weights_only=True)
        load_state(model, ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step = int(ck["step"])
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
            ckpt = last_ckpt = save_checkpoint(model, opt, step, cfg, ctx.out_dir)
        ctx.report(metrics, ckpt)
    if master and val is not None:  # error bars calibrated on the fixed validation set
        scale = calibrate_uncertainties(model, val)
        if writer:
            writer.add_text("val/sd_scale", ", ".join(f"{v:.3g}" for v in scale.tolist()), step)
    if writer:
        writer.close()
    return {"step": step, "metrics": metrics, "checkpoint": last_ckpt, "model": model}
