"""SEVI training configuration: one frozen ``TrainConfig`` (a comment per field) holding a frozen
``DataConfig``, named presets, type-checked ``--field value`` overrides (``sevi.runtime.overrides``),
and the dict round trip that checkpoints store.

``DataConfig`` is everything a training batch depends on besides its seed: the images, the model
inputs, the prior (numbers, never a file path) and the batch size. It is what the generator pool
receives, so a batch is a pure function of (DataConfig, seed). A narrowed prior
(``refine_answer``, an Answer file) is read once, on the driver, by :func:`resolve_config`, into
``DataConfig.prior``; no pool actor, training worker or later command opens the file again.

Overrides name fields flat (``--grid 128``, ``--lr 1e-3``): :meth:`TrainConfig.replace` and
:func:`resolve_config` route each to the ``DataConfig`` or the ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path

from sevi.physics.prior import PriorConfig
from sevi.regressor.features import Features
from sevi.runtime.errors import InputError
from sevi.runtime.overrides import apply_overrides


@dataclass(frozen=True)
class DataConfig:
    """What a training batch depends on besides its seed (module docstring)."""

    grid: int = 64  # G: images are rendered at (and inputs rebinned exactly to) G x G
    representation: str = "polar"  # model input, features.py: "polar" or "fold" (G/2 x G/2 quadrant); polar measured ahead, docs/benchmarks_history.md
    n_r: int = 32  # polar: radial samples over r in (0, 1) (= G/2: one per quadrant pixel)
    n_theta: int = 32  # polar: angular samples over theta in (0, pi/2)
    scale: str = "sqrt"  # "sqrt" or "linear" pixel scaling (features.py)
    electrons: tuple[int, int] = (40_000, 120_000)  # electrons per shell, uniform in [low, high] (1e5 held-out inside)
    n_terms: int = 12  # L: betas per shell (beta_2 .. beta_2L)
    # The direct path (sevi/camera/direct_image.py): Gaussian blur, detector units, applied to the rendered
    # histograms before the features, matching the camera spot (FrameModel.sigma_mean = 0.015). A model
    # with spot_blur > 0 reads summed frames (sevi analyze --path direct); 0 = clean histograms, the
    # events path. No background noise is added: sevi/camera/direct_image.py shows it is < 0.5% of the Poisson noise.
    spot_blur: float = 0.0
    # How training images are drawn (sevi/physics/expected_renderer.py): "itm" samples every electron (the
    # reference); "poisson" draws each pixel around the exact expected image, the same distribution at
    # a cost set by the pixels, not the electrons (BENCHMARKS.md, SEVI forward model).
    render: str = "itm"
    batch_size: int = 32  # images per step per rank
    # The prior the batches are drawn from, as numbers: None = the notes' prior with ``electrons``
    # (docs/prior.md); a refinement's narrowed prior is put here by resolve_config (module doc).
    prior: PriorConfig | None = None

    def __post_init__(self):
        Features(self.representation, self.grid, self.n_r, self.n_theta, self.scale)  # validates
        if not 0 < self.electrons[0] <= self.electrons[1]:
            raise ValueError(f"electrons must satisfy 0 < low <= high, got {self.electrons}")
        from sevi.physics.expected_renderer import RENDER_BACKENDS
        if self.render not in ("itm", "poisson"):
            raise ValueError(f"render must be 'itm' or 'poisson' for training (of {RENDER_BACKENDS}), got {self.render!r}")
        if not self.spot_blur >= 0:
            raise ValueError(f"spot_blur must be >= 0 (detector units), got {self.spot_blur}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.prior is not None and self.prior.n_terms != self.n_terms:
            raise ValueError(f"prior has {self.prior.n_terms} betas per shell, n_terms is {self.n_terms}")

    @property
    def features(self) -> Features:
        return Features(self.representation, self.grid, self.n_r, self.n_theta, self.scale)

    def prior_config(self) -> PriorConfig:
        """The training prior: ``prior``, or the notes' prior with ``electrons`` per shell."""
        return self.prior if self.prior is not None else PriorConfig().with_electrons(*self.electrons)


DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))
# The fields that fix the model's shape besides the data's: a resume must not change them.
MODEL_SHAPE_FIELDS = ("width", "stem_stride", "blocks")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()  # what a batch depends on: images, inputs, prior, batch size
    # -- where the data comes from (read on the driver only) --------------------------------
    refine_answer: str = ""  # refinement: an Answer HDF5 file (sevi predict's output); "" = default prior
    refine_width: float = 3.0  # refinement: prior box = prediction +- refine_width * its 1-sigma
    init_from: str = ""  # fine-tune: load model weights (and target normalisation) from this model.pt / dir
    target_stats_draws: int = 2000  # prior draws for the target mean/std (once per run, seeded; ~2 s)

    # -- model ------------------------------------------------------------------------------
    width: int = 16  # ResNet34 base width (64 = the paper's ResNet34, ~21 M parameters)
    # BasicBlocks per stage (the ResNet family's depth): (3, 4, 6, 3) is ResNet34, (2, 2, 2, 2) ResNet18;
    # python -m ray_jobs.sevi_sweep searches it
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    stem_stride: int = 1  # 1: 3x3 stem, no maxpool (small inputs); 2: torchvision's 7x7/2 + maxpool
    # -- optimisation -----------------------------------------------------------------------
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
        if self.refine_width <= 0:
            raise ValueError(f"refine_width must be positive, got {self.refine_width}")
        if self.refine_answer and self.data.prior is None:
            raise ValueError(f"refine_answer {self.refine_answer!r} is set but its narrowed prior is not in "
                             f"data.prior; build the config with resolve_config, which reads the file once")
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"amp must be 'bf16', 'fp16' or 'none', got {self.amp!r}")
        for name in ("steps", "val_images", "eval_every", "checkpoint_every", "log_every", "width",
                     "target_stats_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.lr == float("inf"):  # also false for NaN
            raise ValueError(f"lr must be a finite number > 0 (the peak learning rate), got {self.lr}")
        for name in ("min_lr", "weight_decay", "grad_clip", "radius_loss_weight", "nll_weight", "warmup_steps"):
            v = getattr(self, name)
            if not v >= 0 or v == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr (the cosine floor below the peak), got min_lr {self.min_lr} "
                             f"and lr {self.lr}")
        if len(self.blocks) != 4 or any(int(b) < 1 for b in self.blocks):
            raise ValueError(f"blocks must be 4 stages of >= 1 BasicBlocks each, got {self.blocks}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride}")

    def replace(self, **fields) -> "TrainConfig":
        """This config with ``fields`` changed, each routed to the DataConfig or the TrainConfig by
        its name (values of the field's type; text values are parsed as ``--field value`` is)."""
        data = {k: v for k, v in fields.items() if k in DATA_FIELDS}
        top = {k: v for k, v in fields.items() if k not in DATA_FIELDS}
        _refuse_unknown(top)
        new = apply_overrides(self.data, data) if data else self.data
        return apply_overrides(dataclasses.replace(self, data=new), top)


def _refuse_unknown(fields: dict) -> None:
    known = DATA_FIELDS + tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "data")
    for key in fields:
        if key.replace("-", "_") not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise InputError(f"unknown TrainConfig field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; fields: {', '.join(known)}")


PRESETS: dict[str, TrainConfig] = {
    # 600 steps, in-process generation, 2-core CPU: 617 s alone with 1 thread on a shared box, held-out ratio 0.40
    # to the prior mean (BENCHMARKS.md, section 2; docs/benchmarks_history.md).
    "cpu-smoke": TrainConfig(),  # the defaults above are this preset
    # Full scale, one A100 per rank: the notes' electron counts, width 64, the measured winner
    # "polar" on a grid-512 quadrant (pixel 0.0039 < the shells' sigma_R of 0.005-0.009; the
    # course's 1024 images rebin to it exactly), 256 r x 256 theta samples (1.4 px apart at
    # r = 0.9). Not yet run on a GPU (BENCHMARKS.md, section 8).
    "a100": TrainConfig().replace(grid=512, n_r=256, n_theta=256, electrons=(1_800_000, 2_500_000), width=64,
                                  stem_stride=2, batch_size=64, steps=60_000, lr=1e-3, min_lr=1e-5, warmup_steps=1000,
                                  val_images=1024, eval_every=1000, checkpoint_every=2000, log_every=50),
    # The course's counts (1.8-2.5e6 electrons per shell, images read at 1024^2 and rebinned exactly to
    # 128^2) on a 2-core CPU in under 30 minutes: the Poisson renderer (cost set by the pixels, ~90x the
    # ITM generator at these counts) and a 64 r x 32 theta polar input. Its job is to start the
    # likelihood refinement (sevi/fit/count_fit.py) in the right optimum (BENCHMARKS.md, SEVI refinement).
    "cpu-course": TrainConfig().replace(grid=128, n_r=64, n_theta=32, electrons=(1_800_000, 2_500_000),
                                        render="poisson", steps=800, val_images=128, eval_every=100,
                                        checkpoint_every=200),
    # The regressor that starts the frame-sum fit for the course's camera (sevi analyze, the direct path):
    # images blurred like the camera's spot (spot_blur, detector units: the mean spot sigma 0.015) at
    # every measurement size from 2,000 to 50,000 frames at the course's density (1.8-2.5e6 electrons
    # per shell per 50,000 frames, i.e. 72,000 per shell at 2,000 frames; 70,000 to 2.8e6 with margin),
    # read at 128^2 and drawn by the Poisson renderer. Its job is to start the fit
    # (sevi/fit/frame_sum_fit.py) in the right optimum (BENCHMARKS.md, frames to the limit).
    "cpu-frames": TrainConfig().replace(grid=128, n_r=64, n_theta=32, electrons=(70_000, 2_800_000),
                                        render="poisson", spot_blur=0.015, steps=1200, val_images=128,
                                        eval_every=200, checkpoint_every=200),
    # The test suite's config: seconds on a CPU.
    "tiny": TrainConfig().replace(grid=32, representation="fold", electrons=(2000, 4000), width=4, batch_size=8,
                                  steps=30, lr=3e-3, warmup_steps=3, val_images=16, eval_every=10,
                                  checkpoint_every=10, log_every=5, target_stats_draws=200),
}


def resolve_config(preset: str, overrides: dict[str, str] | None = None) -> TrainConfig:
    """A preset with ``--field value`` overrides applied, each parsed to the field's type
    (``sevi.runtime.overrides``: unknown fields and wrong types refused). With ``refine_answer``
    the Answer file is read here, once, into the narrowed prior ``data.prior`` (module doc)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    overrides = dict(overrides or {})
    answer = overrides.pop("refine_answer", overrides.pop("refine-answer", ""))
    cfg = PRESETS[preset].replace(**overrides)
    if cfg.init_from:  # read by every worker later: a missing file fails here, on the driver, in one line
        f = Path(cfg.init_from) / "model.pt" if Path(cfg.init_from).is_dir() else Path(cfg.init_from)
        if not f.is_file():
            raise InputError(f"--init_from {cfg.init_from}: no such model file; expected model.pt written by sevi "
                             f"training (a final model or checkpoint), or the directory holding it")
    if not answer:
        return cfg
    from sevi.physics.narrowed_prior import narrow_prior_from_file

    prior = narrow_prior_from_file(cfg.data.prior_config(), answer, cfg.refine_width)
    return dataclasses.replace(cfg, refine_answer=str(answer), data=dataclasses.replace(cfg.data, prior=prior))


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def data_config_from_dict(d: dict) -> DataConfig:
    """The inverse of ``dataclasses.asdict`` for a DataConfig (unknown keys refused, with the
    fields named): what the generator pool receives."""
    d = dict(d)
    prior = d.pop("prior", None)
    unknown = set(d) - set(DATA_FIELDS)
    if unknown:
        raise ValueError(f"unknown DataConfig fields {sorted(unknown)}; fields: {', '.join(DATA_FIELDS)}")
    return DataConfig(**_tuples(d), prior=PriorConfig(**_tuples(prior)) if prior is not None else None)


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of ``dataclasses.asdict`` (lists back to tuples; unknown keys refused). A config
    saved before ``DataConfig`` existed (flat, no ``data``) is read into the nested form."""
    d = dict(d)
    if "data" in d:
        data = dict(d.pop("data"))
    else:
        data = {k: d.pop(k) for k in list(d) if k in DATA_FIELDS}
    unknown = set(d) - set(typing.get_type_hints(TrainConfig))
    if unknown:
        raise ValueError(f"config has unknown fields {sorted(unknown)}")
    return TrainConfig(data=data_config_from_dict(data), **_tuples(d))


def changed_fields(old: TrainConfig, new: TrainConfig, names=DATA_FIELDS + MODEL_SHAPE_FIELDS) -> list[str]:
    """The data and model-shape fields (by default) whose values differ between two configs."""
    def value(cfg, name):
        return getattr(cfg.data, name) if name in DATA_FIELDS else getattr(cfg, name)
    return [n for n in names if value(old, n) != value(new, n)]
