"""`sevi fit` end to end: a camera TIFF (rows = z) with a mask file, fitted; the answer file, the
CSV and the PNG; the centre reported in the file's (column, row) indices."""

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from sevi.cli.main import main
from sevi.evaluation.lab_images import (
    LabCase,
    dead_column,
    disc_mask,
    render_case,
    truth_betas,
)
from sevi.io.tables import read_answer

L = 4
PS = 2 / 256


def test_fit_a_tiff_with_a_mask(tmp_path, capsys):
    case = LabCase((72, 64), (37.3, 30.8), (0.16, 0.27), (0.008, 0.01), (8e4, 1.2e5), truth_betas(2, L, 3), PS)
    mask = disc_mask(case.shape, (50, 45), 5) | dead_column(case.shape, 20)
    Image.fromarray(render_case(case, 0, mask=mask).T.astype(np.uint16)).save(tmp_path / "cam.tif")
    Image.fromarray(mask.T.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    out = tmp_path / "answer.h5"
    assert main(["fit", str(tmp_path / "cam.tif"), "--mask", str(tmp_path / "mask.png"), "--out", str(out),
                 "--terms", str(L), "--pixel-size", str(PS)]) == 0
    printed = capsys.readouterr().out
    assert "TIF 16-bit grey, 72 x 64 pixels (x, z)" in printed and "2 shell(s), by log evidence" in printed
    assert f"wrote {out}" in printed
    ans = read_answer(out)
    with h5py.File(out) as f:
        unc, centre = f["AnswerUncertainty"][()], f["AnswerCentre"][()][0]
        assert set(f) >= {"Answer", "AnswerSigmaR", "AnswerElectrons", "RefineDiagnostics"}
    assert list(ans["SphereId"]) == [0, 1]
    z_R = (ans["R"] - case.R) / unc["R"]
    z_beta = (ans["beta"] - case.beta) / unc["beta"]
    z_c = (np.array([centre["x0"], centre["z0"]]) - case.centre) / np.array([centre["x0_sd"], centre["z0_sd"]])
    assert np.all(np.abs(np.r_[z_R, z_beta.ravel(), z_c]) < 4) and centre["fitted"] == 1
    csv = pd.read_csv(tmp_path / "answer.csv")
    assert list(csv["shell"]) == [0, 1] and np.allclose(csv["R"], ans["R"]) and "beta_8_sd" in csv
    assert (tmp_path / "answer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_given_centre_is_held(tmp_path, capsys):
    case = LabCase((48, 48), (23.5, 24.1), (0.15,), (0.008,), (5e4,), truth_betas(1, 2, 1), PS)
    np.save(tmp_path / "img.npy", render_case(case, 1).T)
    out = tmp_path / "a.h5"
    assert main(["fit", str(tmp_path / "img.npy"), "--out", str(out), "--centre", "23.5,24.1", "--shells", "1",
                 "--terms", "2", "--pixel-size", str(PS), "--csv", str(tmp_path / "x.csv"),
                 "--png", str(tmp_path / "x.png")]) == 0
    assert "(23.50 +- 0.00, 24.10 +- 0.00) px (given); 1 shell(s), as asked" in capsys.readouterr().out
    with h5py.File(out) as f:
        c = f["AnswerCentre"][()][0]
    assert (c["x0"], c["z0"], c["fitted"]) == (23.5, 24.1, 0)
    assert (tmp_path / "x.csv").exists() and (tmp_path / "x.png").exists()
