"""`sevi predict` writes the course's Answer table with error bars, and refuses bad inputs."""

import h5py
import numpy as np
import pytest
import torch

from sevi.cli.main import main
from sevi.io.tables import answer_dtype, read_answer
from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.prior import PriorConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def images(tmp_path, grid=64, n=3, electrons=3000, name="counts"):
    pc = PriorConfig().with_electrons(electrons)
    gen = SeviGenerator(GeneratorConfig(grid=grid), "cpu", pc)
    res, _ = gen(1, n)
    path = tmp_path / f"img_{grid}_{n}_{electrons}_{name}.h5"
    with h5py.File(path, "w") as f:
        if n == 1:
            f[name] = res.images[0].numpy()
        else:
            f["counts"], f["image_id"] = res.images.numpy(), np.arange(10, 10 + n, dtype=np.int32)
    return path


def test_predict_writes_answer_with_uncertainties(model_dir, tmp_path):
    out = tmp_path / "answer.h5"
    assert main(["predict", "--model", str(model_dir), "--images", str(images(tmp_path)), "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = read_answer(out)
    assert rows.dtype == answer_dtype(12, with_image_id=True)
    assert rows["ImageId"].tolist() == [10, 10, 11, 11, 12, 12] and rows["SphereId"].tolist() == [0, 1] * 3
    assert (rows["R"][0::2] <= rows["R"][1::2]).all()
    with h5py.File(out) as f:
        unc, sig = f["AnswerUncertainty"][()], f["AnswerSigmaR"][()]
    assert unc.dtype == rows.dtype and len(unc) == len(rows)
    assert (unc["beta"] > 0).all() and (unc["R"] > 0).all() and (sig["sigma_R_sd"] > 0).all()


@pytest.mark.parametrize("name", ["image", "counts"])
def test_single_image_gives_the_two_row_answer(model_dir, tmp_path, name):
    out = tmp_path / "one.h5"
    main(["predict", "--model", str(model_dir), "--images", str(images(tmp_path, 32, 1, name=name)), "--out", str(out)])
    assert read_answer(out).dtype == answer_dtype(12)


def test_bad_grid_and_electron_count_are_refused(model_dir, tmp_path, capsys):
    assert main(["predict", "--model", str(model_dir), "--images", str(images(tmp_path, 48)),
                 "--out", str(tmp_path / "x.h5")]) == 2
    assert "does not rebin exactly to the model's 32 x 32" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--images", str(images(tmp_path, electrons=50_000)),
                 "--out", str(tmp_path / "x.h5")]) == 2
    assert "trained on 2000-4000 per shell" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def float_images(tmp_path, edit, shape=(2, 32, 32), name="bad.h5"):
    """Two float images of 6000 electrons each (inside tiny's range), then ``edit`` applied."""
    img = np.zeros(shape, np.float64)
    img[:, shape[1] // 4, shape[2] // 4] = 6000.0
    edit(img)
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f["counts"], f["image_id"] = img, np.arange(len(img), dtype=np.int32)
    return path


@pytest.mark.parametrize("value, expected", [(np.nan, "is nan; expected finite"), (np.inf, "is inf; expected finite"),
                                             (-3.0, "is -3.0; expected electron counts >= 0")])
def test_bad_pixels_are_refused_with_image_and_pixel_named(model_dir, tmp_path, capsys, value, expected):
    def edit(img):
        img[1, 5, 7] = value
    path = float_images(tmp_path, edit)
    out = tmp_path / "a.h5"
    assert main(["predict", "--model", str(model_dir), "--images", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: image 1, pixel (x 5, z 7) {expected}" in err, err
    assert not out.exists(), "no Answer (with NaN) is written"


def test_non_square_and_empty_images_are_refused_as_such(model_dir, tmp_path, capsys):
    out = tmp_path / "a.h5"
    path = float_images(tmp_path, lambda img: None, shape=(2, 32, 64))
    assert main(["predict", "--model", str(model_dir), "--images", str(path), "--out", str(out)]) == 2
    assert "image 0 is 32 x 64 pixels; expected a square image" in capsys.readouterr().err
    path = float_images(tmp_path, lambda img: img.__setitem__(1, 0.0), name="empty.h5")
    assert main(["predict", "--model", str(model_dir), "--images", str(path), "--out", str(out)]) == 2
    assert "image 1 holds no electrons" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("tolerance", ["-0.1", "nan", "1.5"])
def test_electron_tolerance_outside_0_1_is_refused(model_dir, tmp_path, capsys, tolerance):
    path = float_images(tmp_path, lambda img: None)
    assert main(["predict", "--model", str(model_dir), "--images", str(path), "--out", str(tmp_path / "a.h5"),
                 "--electron-tolerance", tolerance]) == 2
    assert "--electron-tolerance: got" in capsys.readouterr().err


def test_a_model_giving_nan_is_never_written_as_an_answer(model_dir, tmp_path, capsys):
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.inference import predict_images

    model, cfg = load_model(model_dir)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = float_images(tmp_path, lambda img: None)
    with pytest.raises(ValueError, match="NaN or infinite; expected finite outputs"):
        with h5py.File(path) as f:
            predict_images(model, cfg, [(0, f["counts"][()])], "cpu")


@pytest.mark.parametrize("kind", ["random", "hdf5", "empty", "other-torch", "list"])
def test_files_that_are_not_sevi_models_are_named_never_loaded_unsafely(tmp_path, capsys, kind):
    bad = tmp_path / "model.pt"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "hdf5":
        with h5py.File(bad, "w") as f:
            f["x"] = np.zeros(3)
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)} if kind == "other-torch" else [1, 2], bad)
    path = float_images(tmp_path, lambda img: None)
    for argv in (["predict", "--model", str(bad), "--images", str(path), "--out", str(tmp_path / "a.h5")],
                 ["analyze", str(path), "--model", str(tmp_path), "--out", str(tmp_path / "a.h5")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{bad}: not a model file written by sevi" in err and "weights_only" not in err, err
        assert len(err.strip().splitlines()) == 1


def test_a_missing_model_is_named(tmp_path, capsys):
    path = float_images(tmp_path, lambda img: None)
    assert main(["predict", "--model", str(tmp_path / "run"), "--images", str(path), "--out", str(tmp_path / "a.h5")]) == 2
    assert f"{tmp_path / 'run'}: no such model file" in capsys.readouterr().err


def test_refinement_is_the_default_and_records_the_first_answer(model_dir, tmp_path):
    """Refined by default: Answer is the fit's, AnswerRegressor the model's, RefineDiagnostics per image."""
    src = images(tmp_path, grid=64, n=2, electrons=4000)
    out, raw = tmp_path / "refined.h5", tmp_path / "raw.h5"
    assert main(["predict", "--model", str(model_dir), "--images", str(src), "--out", str(out), "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(model_dir), "--images", str(src), "--out", str(raw), "--device", "cpu",
                 "--no-refine"]) == 0
    with h5py.File(out) as f, h5py.File(raw) as g:
        assert f.attrs["refined"] and not g.attrs["refined"]
        assert "AnswerRegressor" not in g and "RefineDiagnostics" not in g
        np.testing.assert_array_equal(f["AnswerRegressor"]["beta"], g["Answer"]["beta"])
        d = f["RefineDiagnostics"][()]
        assert d["ImageId"].tolist() == [10, 11] and d["converged"].all() and (d["iterations"] >= 1).all()
        assert np.isfinite(d["chi2_dof"]).all() and np.isfinite(f["AnswerUncertainty"]["beta"]).all()
        assert not np.array_equal(f["Answer"]["beta"], g["Answer"]["beta"])


def test_a_refined_image_the_model_does_not_describe_is_named(monkeypatch, capsys, tiny_model_dir):
    """chi^2/dof far above 1 (a wrong optimum, or physics the forward model lacks) is said on stderr."""
    from sevi.cli.policy import run_command
    from sevi.fit import fit_images
    from sevi.pipeline.image_answer import MISFIT_CHI2, answer_images
    from sevi.regressor.inference import load_model_file

    model, cfg = load_model_file(tiny_model_dir, "cpu")
    diag = {"converged": np.array([True, True]), "chi2_dof": np.array([1.01, MISFIT_CHI2 + 1.4])}
    monkeypatch.setattr(fit_images, "refine_answers", lambda images, first, *a, **k: (first, diag))
    images = np.full((2, 32, 32), 6, np.int32)  # 6144 electrons: inside the tiny preset's range
    rc = run_command("sevi", "predict", lambda: answer_images(model, cfg, [(0, images)], "cpu", source="images.h5",
                                                              fit_images=list(images)) and 0)
    err = capsys.readouterr().err
    assert rc == 0 and err.startswith("sevi predict: warning: images.h5"), err
    assert "images.h5" in err and "does not match the forward model for 1 image(s)" in err and "rows 1" in err


def test_shells_closer_than_the_spot_are_named_on_direct_images_only():
    """A direct image's two fitted shells closer than the camera spot: a warning names the rows, and
    the diagnostics carry them; count images have no spot, so nothing is said."""
    from sevi.pipeline.image_answer import fit_warnings, unresolved_shells

    R = np.array([[0.500, 0.504], [0.40, 0.70], [0.600, 0.6149], [0.600, 0.6151]])
    close = unresolved_shells(R, 0.015)
    assert close.tolist() == [True, False, True, False]
    diag = {"converged": np.ones(4, bool), "chi2_dof": np.ones(4), "unresolved": close, "spot": 0.015}
    (line,) = fit_warnings(diag, "frames.h5")
    assert "closer than the camera's spot (0.015" in line and "2 image(s) (rows 0, 2)" in line
    assert fit_warnings({"converged": np.ones(4, bool), "chi2_dof": np.ones(4)}, "images.h5") == []


def test_the_centre_fitted_per_image_is_written_beside_the_answer(model_dir, tmp_path, capsys):
    """--centre fit: AnswerCentre per image, in the input's pixels, at the course's centre for course
    images; --centre fit without the refinement is refused in one line."""
    src = images(tmp_path, grid=64, n=2, electrons=4000)
    out = tmp_path / "centred.h5"
    assert main(["predict", "--model", str(model_dir), "--images", str(src), "--out", str(out), "--device", "cpu",
                 "--centre", "fit"]) == 0
    with h5py.File(out) as f:
        c = f["AnswerCentre"][()]
        assert f.attrs["centre"] == "fit" and f.attrs["refined"]
    assert c["ImageId"].tolist() == [10, 11] and (c["fitted"] == 1).all()
    assert ((c["x0_sd"] > 0) & (c["z0_sd"] > 0)).all()
    for k in ("x0", "z0"):  # the ITM generator's images are centred on the corner of pixels 31 and 32
        assert (np.abs(c[k] - 31.5) < 5 * c[f"{k}_sd"] + 0.05).all(), c
    assert main(["predict", "--model", str(model_dir), "--images", str(src), "--out", str(tmp_path / "x.h5"),
                 "--centre", "fit", "--no-refine"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sevi predict: --centre fit needs the refinement") and not (tmp_path / "x.h5").exists()
