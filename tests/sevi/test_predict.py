"""`sevi predict` writes the course's Answer table with error bars, and refuses bad inputs."""

import h5py
import numpy as np
import pytest
import torch

from sevi.cli import main
from sevi.generator import GeneratorConfig, SeviGenerator
from sevi.io import answer_dtype, read_answer
from sevi.prior import PriorConfig
from sevi.training import PRESETS, build_model, save_final_model, target_stats

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = PRESETS["tiny"]
    m = build_model(cfg)
    m.set_target_stats(*target_stats(cfg))
    d = tmp_path_factory.mktemp("model")
    save_final_model(m.eval(), cfg, d)
    return d


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
