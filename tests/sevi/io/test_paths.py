"""An output path that names an input is refused by every sevi tool, before anything is written."""
import hashlib
import os

import numpy as np
import pytest

from sevi.cli.main import main
from sevi.io import tables as io
from sevi.io.paths import OutputIsInputError, check_outputs, same_file


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_same_file_sees_through_spelling_symlinks_and_hard_links(tmp_path, monkeypatch):
    a = tmp_path / "a.h5"
    a.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    os.symlink(a, tmp_path / "link.h5")
    os.link(a, tmp_path / "hard.h5")
    monkeypatch.chdir(tmp_path)
    assert same_file("a.h5", a) and same_file("sub/../a.h5", a) and same_file("./a.h5", "a.h5")
    assert same_file(tmp_path / "link.h5", a) and same_file(tmp_path / "hard.h5", a)
    assert not same_file(tmp_path / "new.h5", a) and same_file("new.h5", tmp_path / "new.h5")
    check_outputs({"--out": tmp_path / "new.h5"}, {"--in": a, "--none": None})
    with pytest.raises(OutputIsInputError, match="hard.h5: --out is the input --in"):
        check_outputs({"--out": tmp_path / "hard.h5"}, {"--in": a})
    with pytest.raises(OutputIsInputError, match="name the same file"):
        check_outputs({"--out": "b.h5", "--events": tmp_path / "b.h5"}, {})


def test_a_model_directory_counts_with_its_model_pt(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model.pt").write_bytes(b"weights")
    with pytest.raises(OutputIsInputError, match="--model"):
        check_outputs({"--out": tmp_path / "final" / "model.pt"}, {"--model": tmp_path / "final"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small frame file, a Truth file and an images file, made by the tools themselves."""
    d = tmp_path_factory.mktemp("inputs")
    assert main(["simulate-frames", str(d / "frames.h5"), "--frames", "2", "--per-frame", "5",
                 "--device", "cpu"]) == 0
    rows = io.sim_truth_rows([0], [[0.4, 0.7]], [[0.005, 0.005]], [[100, 100]], np.zeros((1, 2, 12)))
    io.write_tables(d / "truth.h5", {"Truth": rows})
    io.write_tables(d / "images.h5", {"counts": np.ones((1, 32, 32), np.int32), "image_id": np.zeros(1, np.int32)})
    (d / "model").mkdir()
    (d / "model" / "model.pt").write_bytes(b"not read: the refusal comes first")
    return d


CASES = {
    "frames": lambda d, x: ["frames", str(x), "--out", str(x), "--no-ray"],
    "analyze": lambda d, x: ["analyze", str(x), "--model", str(d / "model"), "--out", str(x), "--no-ray"],
    "analyze-events": lambda d, x: ["analyze", str(x), "--model", str(d / "model"), "--out", str(d / "a.h5"),
                                    "--events", str(x)],
    "predict": lambda d, x: ["predict", "--model", str(d / "model"), "--images", str(x), "--out", str(x)],
    "simulate": lambda d, x: ["simulate", "--truth", str(x), "--out", str(x), "--device", "cpu"],
    "simulate-frames": lambda d, x: ["simulate-frames", str(x), "--hits", str(x), "--device", "cpu"],
}
INPUT = {"frames": "frames.h5", "analyze": "frames.h5", "analyze-events": "frames.h5", "predict": "images.h5",
         "simulate": "truth.h5", "simulate-frames": "frames.h5"}


@pytest.mark.parametrize("tool", CASES)
def test_every_tool_refuses_to_write_over_its_input(files, tool, tmp_path, capsys):
    x = tmp_path / INPUT[tool]
    x.write_bytes((files / INPUT[tool]).read_bytes())
    before = digest(x)
    assert main(CASES[tool](files, x)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(x) in err and "destroy the input" in err, err
    assert digest(x) == before, f"sevi {tool} changed its input"


def test_a_hard_link_to_the_input_is_refused_too(files, tmp_path, capsys):
    x = tmp_path / "frames.h5"
    x.write_bytes((files / "frames.h5").read_bytes())
    os.link(x, tmp_path / "other-name.h5")
    before = digest(x)
    assert main(["frames", str(x), "--out", str(tmp_path / "other-name.h5"), "--no-ray"]) == 2
    assert "destroy the input" in capsys.readouterr().err and digest(x) == before


def test_predict_refuses_to_write_over_the_model(files, tmp_path, capsys):
    m = files / "model" / "model.pt"
    before = digest(m)
    assert main(["predict", "--model", str(files / "model"), "--images", str(files / "images.h5"),
                 "--out", str(m)]) == 2
    assert "--model" in capsys.readouterr().err and digest(m) == before


def test_an_output_that_is_a_folder_or_under_a_file_is_refused(tmp_path):
    from sevi.io.paths import check_outputs
    from sevi.runtime.errors import InputError

    (tmp_path / "folder.h5").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="folder.h5: is a folder; expected a file name \\(--out\\)"):
        check_outputs({"--out": tmp_path / "folder.h5"})
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_outputs({"--out": tmp_path / "file" / "out.h5"})
    check_outputs({"--out": tmp_path / "new" / "deeper" / "out.h5"})  # folders that would be made are fine
