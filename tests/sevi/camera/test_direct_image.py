"""The direct path (sevi/camera/direct_image.py): summed frames against blurred histograms."""

import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch

from sevi.camera.direct_image import (
    background_moments,
    blur_images,
    blur_render_grid,
    direct_image,
    rebin_sum,
    spot_flux,
    sum_frames,
)
from sevi.camera.frames import FrameModel, draw_shell_hits, render_frames
from sevi.cli.main import main
from sevi.fit.estimators import DEFAULT_ESTIMATOR
from sevi.io import tables as io
from sevi.io.frame_files import accumulate, write_frames

torch.set_num_threads(1)


def test_background_mean_matches_a_monte_carlo_of_the_camera():
    # The camera's own code with no hits: 4 frames = 4.2 M independent background pixels.
    g = torch.Generator().manual_seed(11)
    e = torch.zeros(0)
    fr, _ = render_frames(e, e, e.long(), 4, FrameModel(), generator=g)
    v = fr.double().numpy().ravel()
    mean, std = background_moments()
    se = v.std() / math.sqrt(v.size)  # ~0.0085 counts
    assert abs(v.mean() - mean) < 3 * se, f"MC {v.mean():.4f} vs closed form {mean:.4f} (3 s.e. = {3 * se:.4f})"
    assert abs(v.std() - std) < 0.02, f"std: MC {v.std():.4f} vs closed form {std:.4f}"
    assert 21.6 < mean < 21.7, "clipping at 0 lifts the N(20, 20^2) mean to ~21.67"
    # another camera: no noise -> the background itself, rounded
    assert background_moments(dataclasses.replace(FrameModel(), background_std=0.0, background_mean=20.4)) == (20.0, 0.0)


def test_blur_of_one_pixel_is_the_analytic_gaussian():
    G, s_px = 64, 2.0
    sigma = s_px * 2 / G  # detector units
    img = torch.zeros(2, G, G)
    img[0, 32, 20] = 1.0
    img[1, 0, 20] = 1.0  # on the field-of-view edge
    out = blur_images(img, sigma).double()
    i, j = torch.meshgrid(torch.arange(G, dtype=torch.float64), torch.arange(G, dtype=torch.float64), indexing="ij")
    gauss = torch.exp(-((i - 32) ** 2 + (j - 20) ** 2) / (2 * s_px ** 2)) / (2 * math.pi * s_px ** 2)
    core = ((i - 32) ** 2 + (j - 20) ** 2) <= (3 * s_px) ** 2
    # rtol 1e-4: the kernel is cut at +-4 sigma and renormalised (the cut tail is 6e-5 per axis), float32
    torch.testing.assert_close(out[0][core], gauss[core], rtol=1e-4, atol=1e-9)
    assert (out[0] - gauss).abs().max() < 2e-5, "beyond 3 sigma: the kernel's +-4 sigma cut only"
    assert abs(out[0].sum().item() - 1.0) < 1e-6, "the sum is conserved away from the border"
    # zero padding: what is blurred past the edge is lost, the half of the Gaussian inside stays
    w0 = 1 / (math.sqrt(2 * math.pi) * s_px)
    assert abs(out[1].sum().item() - (0.5 + w0 / 2)) < 1e-5
    torch.testing.assert_close(out[1, 0], gauss[32], rtol=1e-4, atol=2e-5)  # the edge row, unchanged shape
    assert torch.equal(blur_images(img[0], sigma), out[0].float()), "(G, G) and (B, G, G) agree"
    with pytest.raises(ValueError, match="blur_render_grid"):
        blur_images(img, 0.015)  # 0.48 px on 64: under-sampled
    assert blur_render_grid(64, 0.015) == 256 and blur_render_grid(512, 0.015) == 512 and blur_render_grid(64, 0) == 64


def _blurred_hist(x, z, grid, sigma):
    fine = blur_render_grid(grid, sigma)
    h = torch.as_tensor(accumulate(x, z, fine)).double()
    return rebin_sum(blur_images(h, sigma).double().numpy(), grid)


def test_direct_image_of_rendered_frames_is_the_blurred_histogram():
    # 40 frames of two shells, the course's camera (all spreads, noise, rounding, clipping).
    g = torch.Generator().manual_seed(5)
    x, z, f = draw_shell_hits(40, 100, generator=g)
    cam = FrameModel()
    frames, det = render_frames(x, z, f, 40, cam, generator=g, spot_chunk=16)
    S = frames.sum(0, dtype=torch.int64).double().numpy()
    grid = 64
    d = direct_image(S, 40, grid, cam)
    # a batch's sum is kept block-summed (sevi.camera.frame_batches): the same image from it, the
    # background taken out of every camera pixel it holds
    np.testing.assert_allclose(direct_image(rebin_sum(S, 256), 40, grid, cam), d, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="not the camera's 1024 x 1024 pixels"):
        direct_image(S[:1000, :1000], 40, 8, cam)
    xd, zd = x[det].numpy(), z[det].numpy()
    n = len(xd)
    # total: the mean spot flux turns the sum into electrons; the clipped wings cost ~5% (module docstring)
    assert 0.93 * n < d.sum() < 1.0 * n, f"{d.sum():.0f} electron-equivalents for {n} detected electrons"
    d = d / d.sum()

    def chi2(sigma):
        h = _blurred_hist(xd, zd, grid, sigma) if sigma else accumulate(xd, zd, grid).astype(float)
        h = h / h.sum()
        # per-pixel variance (normalised units): the spot flux spread (relative std 0.17) on the
        # electrons of the pixel, and the summed background noise of 16 x 16 frame px over 40 frames
        var = 0.17 ** 2 * h / n + (background_moments(cam)[1] * 16 * math.sqrt(40) / spot_flux(cam) / n) ** 2
        return float(((d - h) ** 2 / var).sum() / d.size), float(np.corrcoef(d.ravel(), h.ravel())[0, 1])

    matched, corr = chi2(0.015)
    # The same electrons on both sides, so shot noise cancels: what is left is the spot-to-spot flux
    # spread and the background noise, which chi2 per pixel ~ 1 measures. The clipped-wing bias
    # adds a little; 2 is a loose bound on it, and far under what a wrong blur gives.
    assert corr > 0.995, corr
    assert matched < 2.0, f"chi2 per pixel with the matched blur: {matched:.2f}"
    # Measured (seed 5): chi2 41.6 / 4.1 / 1.12 / 0.72 / 0.93 / 3.4 at blur 0 / 0.0075 / 0.012 / 0.015 /
    # 0.018 / 0.03: the camera's own sigma fits best, a 20% wrong one already visibly worse.
    for wrong in (0.0, 0.0075, 0.03):
        assert chi2(wrong)[0] > 2 * matched, f"blur {wrong} fits as well as the camera's 0.015"
    for near in (0.012, 0.018):
        assert chi2(near)[0] > matched, f"blur {near} fits better than the camera's 0.015"


def test_streaming_sum_equals_the_in_memory_sum(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(5, 1024, 1024), dtype=np.uint8)
    path = tmp_path / "f.h5"
    write_frames(path, np.arange(5), imgs)
    s, n = sum_frames(path, chunk=2)
    assert n == 5 and s.dtype == np.float64
    np.testing.assert_array_equal(s, imgs.sum(0, dtype=np.int64))
    with pytest.raises(ValueError):
        sum_frames(path, chunk=0)


def test_spot_blur_config_and_batches():
    from sevi.regressor.batches import make_batch, make_generator, render_grid
    from sevi.regressor.train_config import PRESETS, config_from_dict, resolve_config

    cfg = resolve_config("tiny", {"spot_blur": "0.015"})
    assert cfg.data.spot_blur == 0.015 and config_from_dict(dataclasses.asdict(cfg)) == cfg
    assert render_grid(cfg.data) == 32 * 7  # 0.015 units = 0.24 px at 32 -> 7x finer, 1.68 px
    with pytest.raises(ValueError, match="spot_blur"):
        PRESETS["tiny"].replace(spot_blur=-1.0)
    clean = PRESETS["tiny"]
    a, b = make_batch(make_generator(cfg.data, "cpu"), cfg.data, 3), make_batch(make_generator(clean.data, "cpu"), clean.data, 3)
    assert a["x"].shape == b["x"].shape
    assert torch.equal(a["y"], b["y"]), "the same parameters: only the images are blurred"
    assert not torch.allclose(a["x"], b["x"])
    with pytest.raises(ValueError, match="make_generator"):
        make_batch(make_generator(clean.data, "cpu"), cfg.data, 3)


@pytest.fixture(scope="module")
def tiny_direct_model(tmp_path_factory):
    from sevi.regressor.batches import make_batch, make_generator
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import PRESETS
    from sevi.regressor.training import LoopContext, train_loop

    cfg = PRESETS["tiny"].replace(steps=4, eval_every=4, checkpoint_every=4, spot_blur=0.015)
    gen = make_generator(cfg.data, "cpu")
    d = tmp_path_factory.mktemp("direct_model")
    res = train_loop(cfg, lambda step: make_batch(gen, cfg.data, step), LoopContext(out_dir=str(d)))
    return save_final_model(res["model"], cfg, d / "final"), cfg


def test_analyze_direct_path_writes_an_answer(tiny_direct_model, tmp_path, capsys):
    model, cfg = tiny_direct_model
    frames = tmp_path / "frames.h5"
    assert main(["simulate-frames", str(frames), "--frames", "40", "--hits", "shells", "--seed", "1"]) == 0
    out = tmp_path / "answer.h5"
    # auto: the model was trained with spot_blur > 0, so the direct path (no centroiding, no events file)
    assert main(["analyze", str(frames), "--model", model, "--out", str(out), "--chunk", "16", "--device", "cpu"]) == 0
    answer = io.read_answer(out)
    assert answer.dtype == io.answer_dtype(cfg.data.n_terms) and len(answer) == 2
    assert answer["R"][0] <= answer["R"][1] and np.isfinite(answer["beta"]).all()
    with h5py.File(out) as f:
        unc = f["AnswerUncertainty"][()]
        assert f.attrs["path"] == "direct" and f.attrs["n_frames"] == 40
        assert f.attrs["estimator"] == DEFAULT_ESTIMATOR  # the answer file says which estimator answered
        # 40 frames: at most 40 batches, one frame each, enough for the tiny model's parameters
        assert f.attrs["error_bars"] == "spread of 40 batches of frames"
    assert (unc["beta"] > 0).all() and (unc["R"] > 0).all()
    assert not (tmp_path / "answer.events.h5").exists(), "the direct path centroids nothing"
    with h5py.File(out) as f:  # refined by default, with the direct image's own fit (sevi/fit/direct_fit.py)
        assert f.attrs["refined"] and "RefineDiagnostics" in f and "AnswerRegressor" in f
        close = abs(answer["R"][1] - answer["R"][0]) < cfg.data.spot_blur
        assert f.attrs["shells_unresolved"].tolist() == ([0] if close else [])  # rows closer than the spot
        first = f["AnswerRegressor"][()]
        assert np.isfinite(f["RefineDiagnostics"]["chi2_dof"]).all()
    out2 = tmp_path / "answer2.h5"
    assert main(["analyze", str(frames), "--model", model, "--out", str(out2), "--path", "direct",
                 "--chunk", "7", "--device", "cpu", "--no-refine"]) == 0
    # another chunking of the same sum: the same regressor answer
    np.testing.assert_allclose(io.read_answer(out2)["beta"], first["beta"], rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse's own refusal: usage and one line naming the option
        main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a4.h5"), "--estimator", "ols"])
    assert e.value.code == 2 and "argument --estimator: invalid choice: 'ols'" in capsys.readouterr().err
    # too few batches for the fit's parameters: the model's error bars, said in a warning and the file
    out3 = tmp_path / "answer3.h5"
    assert main(["analyze", str(frames), "--model", model, "--out", str(out3), "--chunk", "16", "--device", "cpu",
                 "--batches", "3"]) == 0
    assert "40 frames make 3 batches, fewer than the 32 the error bars from their spread need; the error bars are " \
           "the model's" in capsys.readouterr().err
    with h5py.File(out3) as f:
        assert f.attrs["error_bars"] == "model"
        unc3 = f["AnswerUncertainty"][()]
    assert not np.allclose(unc3["R"], unc["R"]), "the bars differ: one from the frames' spread, one from the model"
    capsys.readouterr()
    assert main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a5.h5"), "--device", "cpu",
                 "--batches", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batches: got -1; expected >= 0" in err[0] and not (tmp_path / "a5.h5").exists()


def test_predict_refines_a_direct_image_only_with_its_frame_count(tiny_direct_model, tmp_path, capsys):
    """sevi predict on a direct image (electron units, may dip below 0): refined with the direct fit
    when the file says how many frames were summed; refused with one clear line when it does not."""
    from sevi.camera.direct_image import write_direct_image

    model, cfg = tiny_direct_model
    frames = tmp_path / "frames.h5"
    assert main(["simulate-frames", str(frames), "--frames", "40", "--hits", "shells", "--seed", "2"]) == 0
    total, n = sum_frames(frames)
    image = direct_image(total, n, 256)
    assert image.min() < 0, "background noise: some pixels below 0, which a direct image may have"
    good, bare = tmp_path / "direct.h5", tmp_path / "bare.h5"
    write_direct_image(good, image, n)
    with h5py.File(bare, "w") as f:
        f["image"] = image
    assert main(["predict", "--model", model, "--images", str(good), "--out", str(tmp_path / "a.h5"),
                 "--device", "cpu"]) == 0
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["refined"] and bool(f["RefineDiagnostics"]["converged"][0]) in (True, False)
        assert f.attrs["estimator"] == DEFAULT_ESTIMATOR and f.attrs["error_bars"] == "model"
    assert main(["predict", "--model", model, "--images", str(bare), "--out", str(tmp_path / "b.h5"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "n_frames" in err and "--no-refine" in err and "Traceback" not in err
    assert not (tmp_path / "b.h5").exists()
    assert main(["predict", "--model", model, "--images", str(bare), "--out", str(tmp_path / "b.h5"),
                 "--device", "cpu", "--no-refine"]) == 0
    capsys.readouterr()


@pytest.mark.slow  # ~2 min; the same fit on a small camera: tests/sevi/fit/test_centred_frame_sum_fit.py
def test_predict_fits_the_centre_of_a_frame_sum(tiny_direct_model, tmp_path):
    """sevi predict --centre fit on a frame sum of the course's camera: AnswerCentre in the frames'
    pixel indices, at the simulated frames' centre (the course's, 511.5) within its error bars."""
    from sevi.camera.direct_image import write_direct_image

    model, _ = tiny_direct_model
    frames = tmp_path / "frames.h5"
    assert main(["simulate-frames", str(frames), "--frames", "40", "--hits", "shells", "--seed", "2"]) == 0
    total, n = sum_frames(frames)
    good = tmp_path / "direct.h5"
    write_direct_image(good, direct_image(total, n, 256), n)
    assert main(["predict", "--model", model, "--images", str(good), "--out", str(tmp_path / "c.h5"),
                 "--device", "cpu", "--centre", "fit"]) == 0
    with h5py.File(tmp_path / "c.h5") as f:
        c = f["AnswerCentre"][()]
    assert len(c) == 1 and c["fitted"][0] == 1
    for x, sd in (("x0", "x0_sd"), ("z0", "z0_sd")):
        assert 0 < c[sd][0] < 5 and abs(c[x][0] - 511.5) < 4 * c[sd][0], (c[x][0], c[sd][0])


def test_analyze_direct_path_refuses_a_short_measurement(tiny_direct_model, tmp_path, capsys):
    model, _ = tiny_direct_model
    frames = tmp_path / "frames.h5"
    main(["simulate-frames", str(frames), "--frames", "2", "--hits", "shells", "--seed", "1"])
    assert main(["analyze", str(frames), "--model", model, "--out", str(tmp_path / "a.h5"), "--path", "direct",
                 "--device", "cpu"]) == 2
    assert "electrons; this model was trained on" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists()


def test_compare_paths_tool_runs_end_to_end(tiny_direct_model, tmp_path):
    """tools/compare_paths.py on one tiny measurement: all four paths scored, JSON and PNG written."""
    import json

    from sevi.regressor.batches import make_batch, make_generator
    from sevi.regressor.checkpoints import save_final_model
    from sevi.regressor.train_config import PRESETS
    from sevi.regressor.training import LoopContext, train_loop
    from tools import compare_paths

    direct, _ = tiny_direct_model
    cfg = PRESETS["tiny"].replace(steps=4, eval_every=4, checkpoint_every=4)
    gen = make_generator(cfg.data, "cpu")
    res = train_loop(cfg, lambda step: make_batch(gen, cfg.data, step), LoopContext(out_dir=str(tmp_path / "ev")))
    events = save_final_model(res["model"], cfg, tmp_path / "ev" / "final")
    out = tmp_path / "cmp"
    # 54 frames x 100 / 0.9 / 2 = 3000 electrons per shell: inside tiny's training range (2000-4000).
    assert compare_paths.main(["--events-model", events, "--direct-model", direct, "--measurements", "1",
                               "--frames", "54", "--chunk", "27", "--out", str(out)]) == 0
    doc = json.loads((out / "compare_paths.json").read_text())
    assert set(compare_paths.PATHS) <= set(doc["summary"])
    assert all(np.isfinite(doc["summary"][p]["mean"]) for p in compare_paths.PATHS)
    refined = [f"{p}+refined" for p in compare_paths.PATHS]  # each path refined with its own forward model
    assert all(np.isfinite(doc["summary"][p]["mean"]) for p in refined)
    assert set(doc["summary"]["calibration"]) == set(compare_paths.PATHS)
    assert all(doc["rows"][0][f"refine_{p}"]["iterations"] >= 1 for p in compare_paths.PATHS)
    # the frames are cached: a render-only run finds them and renders nothing
    assert compare_paths.main(["--render-only", "--measurements", "1", "--frames", "54", "--out", str(out)]) == 0
    assert (out / "compare_paths.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="outside"):
        compare_paths.main(["--events-model", events, "--direct-model", direct, "--measurements", "1",
                            "--frames", "5", "--out", str(out)])
