"""sevi/physics/expected_renderer.py: the Poisson renderer draws what the ITM generator draws."""

import math

import h5py
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats

from sevi.cli.main import main as sevi_main
from sevi.physics.expected_renderer import (
    RENDER_ACCURACY,
    ExpectedRenderer,
    make_renderer,
)
from sevi.physics.forward import ExpectedImage, ForwardConfig
from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.prior import Prior, PriorConfig, ShellParams


def test_render_accuracy_is_close_to_the_default_model():
    fast, ref = ExpectedImage(RENDER_ACCURACY(128, 12)), ExpectedImage(ForwardConfig(grid=128))
    for R, s in ((0.31, 0.005), (0.6, 0.007), (0.89, 0.009)):
        a, b = fast.shell_basis(R, s), ref.shell_basis(R, s)
        err = float((a - b).abs().max() / b[0].abs().max())
        assert err < 2e-3, f"R={R}, sigma={s}: {err:.1e} of the brightest pixel"


def ring_groups(G: int, n_r: int = 24, n_t: int = 6) -> np.ndarray:
    """Pixel labels by (radius, angle) cell: groups large enough for a chi^2 on their sums."""
    c = (np.arange(G) + 0.5) * 2 / G - 1
    x, z = np.meshgrid(c, c, indexing="ij")
    r = np.minimum((np.hypot(x, z) * n_r).astype(int), n_r)  # n_r: the corners
    t = np.minimum((np.arctan2(np.abs(x), np.abs(z)) / (math.pi / 2) * n_t).astype(int), n_t - 1)
    return (r * n_t + t).ravel()


def two_sample_chi2(params, shift_R: float = 0.0, G: int = 64) -> tuple[float, int]:
    """Two-sample test: the same parameters rendered by both backends at fixed seeds (the Poisson
    draw with its radii moved by ``shift_R``); per (radius, angle) group, sums a and b of independent
    Poisson counts with equal means give (a - b)^2 / (a + b) ~ chi^2(1). Returns (chi2, dof)."""
    prior = PriorConfig().with_electrons(200_000)
    moved = ShellParams(params.R + shift_R, params.sigma_R, params.beta, params.n_electrons)
    itm = SeviGenerator(GeneratorConfig(grid=G), "cpu", prior).render(params, seed=1).images.double()
    poi = ExpectedRenderer(GeneratorConfig(grid=G), "cpu", prior).render(moved, seed=2).images.double()
    groups = ring_groups(G)
    chi2, dof = 0.0, 0
    for i in range(len(params)):
        a = np.bincount(groups, itm[i].numpy().ravel())
        b = np.bincount(groups, poi[i].numpy().ravel())
        use = a + b > 50
        chi2 += float(((a - b)[use] ** 2 / (a + b)[use]).sum())
        dof += int(use.sum())
    return chi2, dof


def test_poisson_and_itm_agree_in_distribution():
    params = Prior(PriorConfig().with_electrons(200_000))(6, seed=3).params
    chi2, dof = two_sample_chi2(params)
    p = stats.chi2.sf(chi2, dof)
    assert p > 1e-3, f"chi2 {chi2:.1f} on {dof} groups, p = {p:.2g}"
    assert 0.8 < chi2 / dof < 1.25
    # ... and the same test sees a radius shift of 0.002 (a quarter of a pixel at G = 64)
    chi2, dof = two_sample_chi2(params, shift_R=0.002)
    assert stats.chi2.sf(chi2, dof) < 1e-10, f"a 0.002 shift passed: chi2/dof {chi2 / dof:.2f}"


def test_poisson_renderer_is_seeded_and_counts_all_electrons():
    prior = PriorConfig().with_electrons(50_000)
    r = make_renderer("poisson", GeneratorConfig(grid=32), "cpu", prior)
    res, params = r(seed=5, n=3)
    again, _ = r(seed=5, n=3)
    assert torch.equal(res.images, again.images) and res.images.dtype == torch.int32
    total = res.images.sum(dim=(1, 2)) + res.out_of_view
    assert (total - params.n_electrons.sum(1)).abs().max() < 5 * math.sqrt(1e5)


def test_expected_backend_is_the_mean():
    prior = PriorConfig().with_electrons(10_000)
    r = make_renderer("expected", GeneratorConfig(grid=32), "cpu", prior)
    res, params = r(seed=1, n=2)
    assert res.images.dtype == torch.float32
    assert_allclose(res.images.sum(dim=(1, 2)).numpy(), params.n_electrons.sum(1).numpy(), rtol=1e-4)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="render backend"):
        make_renderer("fast", GeneratorConfig(grid=32), "cpu")


def test_simulate_render_expected_writes_the_expected_dataset(tmp_path):
    out = tmp_path / "e.h5"
    assert sevi_main(["simulate", "--random", "2", "--grid", "32", "--electrons", "1000", "--render", "expected",
                      "--device", "cpu", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        e = f["expected"][()]
        assert e.shape == (2, 32, 32) and e.dtype == np.float64
        assert list(f["image_id"][()]) == [0, 1] and "counts" not in f
        assert_allclose(e.sum(axis=(1, 2)) + f["out_of_view"][()], 2000, atol=1)
    out2 = tmp_path / "p.h5"
    assert sevi_main(["simulate", "--random", "2", "--grid", "32", "--electrons", "1000", "--render", "poisson",
                      "--device", "cpu", "--out", str(out2)]) == 0
    with h5py.File(out2) as f:
        assert f["counts"].dtype == np.int32 and f.attrs["render"] == "poisson"


def test_training_batches_with_the_poisson_renderer():

    from sevi.regressor.batches import make_batch, make_generator
    from sevi.regressor.train_config import PRESETS
    cfg = PRESETS["tiny"].replace(render="poisson")
    gen = make_generator(cfg.data, "cpu")
    assert isinstance(gen, ExpectedRenderer)
    b = make_batch(gen, cfg.data, seed=3)
    assert b["x"].shape[0] == cfg.data.batch_size and torch.isfinite(b["x"]).all()
    with pytest.raises(ValueError, match="render"):
        cfg.replace(render="expected")
