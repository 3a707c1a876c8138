"""Statistical tests of the ITM sampler and renderer against closed forms, at fixed seeds."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from scipy import stats

from sevi.physics.generator import GeneratorConfig, SeviGenerator, normalise_images
from sevi.physics.legendre import angular_cdf, legendre_p
from sevi.physics.prior import ShellParams

BETA = [0.9, 0.7, 0.4, 0.2, 0.08, 0.03, 0.01, 0.002, 0.003, 0.0, 0.0, 0.0]


def one_image(beta=BETA, R=(0.4, 0.7), sigma=(0.0, 0.0), n=(200_000, 200_000), beta2=None):
    b = torch.tensor([beta, beta2 if beta2 is not None else beta], dtype=torch.float64)[None]
    return ShellParams(torch.tensor([R], dtype=torch.float64), torch.tensor([sigma], dtype=torch.float64),
                       b, torch.tensor([n]))


def cos_theta_samples(beta, n=400_000, seed=11):
    # A thin shell (sigma_R = 0) at R = 0.5: z = R cos(theta) exactly, so cos(theta) = z / R.
    gen = SeviGenerator(GeneratorConfig(grid=64), "cpu")
    x, z, _, shell = gen.sample_electrons(one_image(beta, R=(0.5, 0.5), n=(n, 0)), seed)
    assert (shell == 0).all()
    return (z.double() / 0.5).clamp(-1, 1)


def chi2_pvalue(c, beta, bins=200):
    """Pearson chi-square of samples c against I(x), on bins of equal probability."""
    grid = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    cdf = angular_cdf(grid, torch.tensor(beta, dtype=torch.float64)).numpy()
    edges = np.interp(np.linspace(0, 1, bins + 1), cdf, grid.numpy())
    edges[0], edges[-1] = -1.0, 1.0
    obs, _ = np.histogram(c.numpy(), edges)
    return stats.chisquare(obs).pvalue


def test_cos_theta_follows_the_density():
    c = cos_theta_samples(BETA)
    assert chi2_pvalue(c, BETA) > 1e-3, "sampled cos(theta) does not follow I(x)"
    # The same test has power: it rejects a density that differs by 0.03 in beta_2.
    wrong = [BETA[0] + 0.03] + BETA[1:]
    assert chi2_pvalue(c, wrong) < 1e-6, "goodness-of-fit test cannot tell a 0.03 change of beta_2"


def test_moment_estimator_recovers_each_beta():
    c = cos_theta_samples(BETA)
    p = legendre_p(c, 24)[:, 2::2]  # (N, 12)
    l = torch.arange(2, 25, 2, dtype=torch.float64)
    est = (2 * l + 1) / 2 * p.mean(0)
    se = (2 * l + 1) / 2 * p.std(0) / len(c) ** 0.5
    z = ((est - torch.tensor(BETA, dtype=torch.float64)) / se).numpy()
    assert (np.abs(z) < 4).all(), f"moment estimates off by {np.round(z, 2)} standard errors"


def test_thin_isotropic_shell_projects_to_closed_form_radius():
    # Projected radius s of a thin isotropic shell: P(s <= t) = 1 - sqrt(1 - t^2 / R^2).
    R = 0.6
    gen = SeviGenerator(GeneratorConfig(grid=64), "cpu")
    x, z, _, _ = gen.sample_electrons(one_image([0.0] * 12, R=(R, R), n=(100_000, 0)), seed=5)
    s = torch.sqrt(x.double() ** 2 + z.double() ** 2).clamp(max=R).numpy()
    res = stats.kstest(s, lambda t: 1 - np.sqrt(np.clip(1 - (t / R) ** 2, 0, 1)))
    assert res.pvalue > 1e-3, f"projected radial profile differs from the closed form (KS p={res.pvalue:.2e})"


def test_image_axes_and_binning_match_histogram2d():
    # Axis 0 is x, axis 1 is z; binning as np.histogram2d(x, z, bins=G, range=[[-1, 1]] * 2).
    gen = SeviGenerator(GeneratorConfig(grid=128, chunk_electrons=50_000), "cpu")
    params = one_image(R=(0.3, 0.8), sigma=(0.01, 0.02), n=(70_000, 90_000))
    img = gen.render(params, seed=3).images[0].numpy()
    x, z, _, _ = gen.sample_electrons(params, seed=3)
    ref, _, _ = np.histogram2d(x.double().numpy(), z.double().numpy(), bins=128, range=[[-1, 1], [-1, 1]])
    assert_array_equal(img, ref, err_msg="counts in other bins than np.histogram2d")
    # Anisotropy along the polarisation axis z: beta_2 > 0 puts electrons near the poles
    # (x ~ 0, |z| ~ R), so the strip x ~ 0 (axis 0) holds more than the strip z ~ 0 (axis 1).
    assert img[:, 60:68].sum() < 0.5 * img[60:68, :].sum()


def test_large_grids_bin_exactly_past_2_to_the_24_pixels():
    # 4608^2 = 21.2 million pixels per image, two images: flat indices up to 42 million, where a
    # float32 index skips every odd value. The same electrons through np.histogram2d must agree.
    g = 4608
    gen = SeviGenerator(GeneratorConfig(grid=g), "cpu")
    p = one_image([0.0] * 12, R=(0.5, 0.85), sigma=(0.01, 0.01), n=(3000, 3000))
    params = ShellParams(*(torch.cat([v, v]) for v in (p.R, p.sigma_R, p.beta, p.n_electrons)))
    img = gen.render(params, seed=4).images.numpy()
    x, z, image, _ = gen.sample_electrons(params, seed=4)
    assert (x.numpy() > 0.6).sum() > 500, "image 0 needs electrons whose flat index lies past 2^24"
    for k in range(2):
        sel = (image == k).numpy()
        ref, _, _ = np.histogram2d(x.double().numpy()[sel], z.double().numpy()[sel], bins=g, range=[[-1, 1], [-1, 1]])
        assert_array_equal(img[k], ref, err_msg=f"image {k} at grid {g} differs from np.histogram2d")
        del ref


def test_z_marginal_of_the_image_is_the_angular_density():
    # For a thin shell, the image summed over x is the distribution of z = R cos(theta).
    R, G, N = 0.75, 256, 300_000
    gen = SeviGenerator(GeneratorConfig(grid=G), "cpu")
    img = gen.render(one_image(R=(R, R), n=(N, 0)), seed=9).images[0].numpy()
    edges = np.linspace(-1, 1, G + 1)
    cdf = angular_cdf(torch.tensor(np.clip(edges / R, -1, 1)), torch.tensor(BETA, dtype=torch.float64)).numpy()
    expected = N * np.diff(cdf)
    obs = img.sum(axis=0)
    keep = expected > 20
    chi2 = ((obs[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    p = stats.chi2.sf(chi2, keep.sum() - 1)
    assert obs[~keep].sum() <= expected[~keep].sum() + 5 * np.sqrt(expected[~keep].sum() + 1)
    assert p > 1e-3, f"z-marginal of the image differs from N * I(z/R) / R (p = {p:.2e})"


def test_counts_are_conserved_including_out_of_view():
    gen = SeviGenerator(GeneratorConfig(grid=64, chunk_electrons=10_000), "cpu")
    params = one_image(R=(0.5, 0.98), sigma=(0.01, 0.05), n=(30_000, 40_000))
    res = gen.render(params, seed=1)
    total = int(res.images.sum()) + int(res.out_of_view.sum())
    assert total == 70_000
    assert int(res.out_of_view.sum()) > 0, "a shell at R = 0.98 with sigma 0.05 must lose electrons"


def test_deterministic_for_a_seed_and_batched_like_single():
    gen = SeviGenerator(GeneratorConfig(grid=64, chunk_electrons=25_000), "cpu")
    a, params = gen(seed=4, n=3)
    b, _ = gen(seed=4, n=3)
    c, _ = gen(seed=5, n=3)
    assert_array_equal(a.images.numpy(), b.images.numpy())
    assert not torch.equal(a.images, c.images)
    assert (a.images.sum((1, 2)) + a.out_of_view == params.n_electrons.sum(1)).all()


def test_chunk_size_bounds_memory_not_results():
    # Different chunk sizes: different realisations of the same distribution, same totals.
    p = one_image(n=(50_000, 50_000))
    small = SeviGenerator(GeneratorConfig(grid=32, chunk_electrons=7_000), "cpu").render(p, 0).images[0]
    big = SeviGenerator(GeneratorConfig(grid=32, chunk_electrons=1 << 22), "cpu").render(p, 0).images[0]
    assert small.sum() == big.sum() == 100_000
    # Both are Poisson draws of the same mean image: chi-square of their difference is ~ #bins.
    both = (small + big).double()
    m = both > 0
    chi2 = (((small - big).double()[m]) ** 2 / both[m]).sum().item()
    assert chi2 / m.sum().item() == pytest.approx(1.0, abs=0.15)


def test_normalised_images_sum_to_255():
    gen = SeviGenerator(GeneratorConfig(grid=32, normalise=True), "cpu")
    res = gen.render(one_image(n=(1000, 1000)), 0)
    assert res.images.dtype == torch.float32
    assert torch.allclose(res.images.sum((1, 2)), torch.tensor(255.0))
    assert torch.allclose(normalise_images(torch.ones(2, 4, 4)).sum((1, 2)), torch.tensor(255.0))


def test_pick_device_refuses_missing_cuda():
    from sevi.runtime.device import pick_device
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda")


def test_the_default_chunk_is_the_devices_and_a_named_chunk_wins():
    from sevi.physics.generator import CPU_CHUNK_ELECTRONS, GPU_CHUNK_ELECTRONS, default_chunk_electrons

    assert default_chunk_electrons(torch.device("cpu")) == CPU_CHUNK_ELECTRONS == 1 << 16
    assert default_chunk_electrons(torch.device("cuda", 0)) == GPU_CHUNK_ELECTRONS == 1 << 22
    p = one_image(n=(100_000, 100_000))  # 200,000 electrons: several CPU chunks
    default = SeviGenerator(GeneratorConfig(grid=32), "cpu").render(p, 5).images
    named = SeviGenerator(GeneratorConfig(grid=32, chunk_electrons=1 << 16), "cpu").render(p, 5).images
    old = SeviGenerator(GeneratorConfig(grid=32, chunk_electrons=1 << 22), "cpu").render(p, 5).images
    assert torch.equal(default, named) and not torch.equal(default, old)
    with pytest.raises(ValueError):
        GeneratorConfig(chunk_electrons=0)
