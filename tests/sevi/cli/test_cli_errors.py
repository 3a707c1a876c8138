"""Reliability of the `sevi` front door: bad inputs, each broken one way, through `sevi.cli.main`.

Every case must end with exit status 2 and one line on stderr that names the file (or the
option) at fault, with no traceback; no input file may change, and no output may appear.
"""
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sevi.cli.main import main
from sevi.io import tables as io
from sevi.io.frame_files import FRAME_DTYPE

torch.set_num_threads(1)


def truth(edit=None):
    rows = io.sim_truth_rows([0], [[0.4, 0.7]], [[0.005, 0.005]], [[100, 100]], np.zeros((1, 2, 12)))
    if edit:
        edit(rows)
    return rows


def images(edit=None, shape=(2, 32, 32), ids=None):
    """Two float images of 6000 electrons (inside the tiny model's 4000-8000 range), then ``edit``."""
    img = np.zeros(shape)
    img[:, shape[1] // 4, shape[2] // 4] = 6000.0
    if edit:
        edit(img)
    return {"counts": img, "image_id": np.arange(len(img), dtype=np.int32) if ids is None else np.asarray(ids, np.int32)}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """The inputs, made by the project's own tools where it has one, then broken one way each."""
    from sevi.regressor.batches import target_stats
    from sevi.regressor.checkpoints import build_model, save_final_model
    from sevi.regressor.train_config import PRESETS

    d = tmp_path_factory.mktemp("inputs")
    assert main(["simulate-frames", str(d / "frames.h5"), "--frames", "2", "--per-frame", "5", "--device", "cpu"]) == 0
    (d / "cut.h5").write_bytes((d / "frames.h5").read_bytes()[:3000])
    with h5py.File(d / "noframes.h5", "w") as f:
        f.create_dataset("FinalImage", shape=(0,), dtype=FRAME_DTYPE)
    with h5py.File(d / "smallframes.h5", "w") as f:
        f["FinalImage"] = np.zeros(2, np.dtype([("ImageId", "<i4"), ("Image", "u1", (8, 8))]))
    (d / "text.h5").write_text("ImageId,Image\n1,2\n")
    (d / "random.h5").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "empty.h5").write_bytes(b"")
    (d / "folder.h5").mkdir()
    tables = {
        "truth.h5": truth(), "truth_empty.h5": truth()[:0],
        "truth_bigR.h5": truth(lambda r: r.__setitem__("R", [0.4, 1.5])),
        "truth_bigsig.h5": truth(lambda r: r.__setitem__("sigma_R", [0.005, 2.0])),
        "truth_nan.h5": truth(lambda r: r.__setitem__("R", [np.nan, 0.7])),
        "truth_zero.h5": truth(lambda r: r.__setitem__("n_electrons", 0)),
        "truth_negdensity.h5": truth(lambda r: r["beta"].__setitem__((1, 0), -0.9)),
        "truth_threerows.h5": np.concatenate([truth(), truth()[:1]]),
        "truth_nofield.h5": np.zeros(2, np.dtype([("ImageId", "<i4"), ("R", "<f8")])),
    }
    for name, rows in tables.items():
        io.write_tables(d / name, {"Truth": rows})
    for name, kw in {"images.h5": {}, "img_nan.h5": dict(edit=lambda i: i.__setitem__((1, 5, 7), np.nan)),
                     "img_inf.h5": dict(edit=lambda i: i.__setitem__((1, 5, 7), np.inf)),
                     "img_neg.h5": dict(edit=lambda i: i.__setitem__((1, 5, 7), -3.0)),
                     "img_nonsquare.h5": dict(shape=(2, 32, 64)), "img_zero.h5": dict(edit=lambda i: i.__setitem__(1, 0.0)),
                     "img_idlen.h5": dict(ids=[0, 1, 2]), "img_dupid.h5": dict(ids=[4, 4]),
                     "img_grid48.h5": dict(shape=(2, 48, 48)), "img_many.h5": dict(edit=lambda i: i.__imul__(100))}.items():
        io.write_tables(d / name, images(**kw))
    io.write_tables(d / "img_1d.h5", {"counts": np.ones(5)})
    with h5py.File(d / "hits_none.h5", "w") as f:
        f["x"] = np.zeros(3)
    cfg = PRESETS["tiny"]
    m = build_model(cfg)
    m.set_target_stats(*target_stats(cfg))
    save_final_model(m.eval(), cfg, d / "model")
    for name, data in (("random", np.random.default_rng(1).bytes(4096)), ("empty", b""),
                       ("hdf5", (d / "images.h5").read_bytes())):
        (d / f"model_{name}").mkdir()
        (d / f"model_{name}" / "model.pt").write_bytes(data)
    (d / "model_other").mkdir()
    torch.save({"weights": torch.zeros(2)}, d / "model_other" / "model.pt")
    lab_images(d)
    return d


def lab_images(d: Path) -> None:
    """`sevi fit`'s inputs: a camera TIFF of one ring (rows = z) and its broken neighbours."""
    from PIL import Image

    from sevi.evaluation.lab_images import LabCase, render_case, truth_betas

    case = LabCase((48, 40), (23.6, 19.2), (0.12,), (0.006,), (3e4,), truth_betas(1, 2, 0), 2 / 128)
    img = render_case(case, 0).T.astype(np.uint16)  # the file's rows are z
    Image.fromarray(img).save(d / "lab.tif")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(d / "lab_mask40.png")
    gain = np.ones(img.shape)
    gain[3, 5] = 0.0
    np.save(d / "lab_gain0.npy", gain)
    gain[3, 5] = np.nan
    np.save(d / "lab_gainnan.npy", gain)
    Image.fromarray(np.stack([img.astype(np.uint8)] * 3, -1)).save(d / "lab_rgb.tif")
    Image.fromarray(np.zeros(img.shape, np.uint16)).save(d / "lab_zero.png")
    (d / "lab.jpg").write_bytes(b"not read")


M = "model"  # the good model directory
CASES = {  # name: (argv with {d} for the inputs folder and {o} for an output path, text the one line must hold)
    # sevi simulate
    "simulate truth missing": ("simulate --truth {d}/nope.h5 --out {o}", "{d}/nope.h5: no such file"),
    "simulate truth is a folder": ("simulate --truth {d}/folder.h5 --out {o}", "{d}/folder.h5: is a directory"),
    "simulate truth is text": ("simulate --truth {d}/text.h5 --out {o}", "{d}/text.h5: not a readable HDF5 file"),
    "simulate truth is random bytes": ("simulate --truth {d}/random.h5 --out {o}", "{d}/random.h5: not a readable HDF5"),
    "simulate truth is an empty file": ("simulate --truth {d}/empty.h5 --out {o}", "{d}/empty.h5: not a readable HDF5"),
    "simulate no Truth table": ("simulate --truth {d}/images.h5 --out {o}", "{d}/images.h5: no table 'Truth'"),
    "simulate empty Truth": ("simulate --truth {d}/truth_empty.h5 --out {o}", "'Truth' has no rows"),
    "simulate R > 1": ("simulate --truth {d}/truth_bigR.h5 --out {o}", "{d}/truth_bigR.h5: field 'Truth.R' = 1.5"),
    "simulate sigma_R 2": ("simulate --truth {d}/truth_bigsig.h5 --out {o}", "field 'Truth.sigma_R' = 2.0"),
    "simulate NaN R": ("simulate --truth {d}/truth_nan.h5 --out {o}", "{d}/truth_nan.h5: field 'Truth.R' is NaN"),
    "simulate zero electrons": ("simulate --truth {d}/truth_zero.h5 --out {o}", "'Truth.n_electrons' is 0 in both"),
    "simulate negative density": ("simulate --truth {d}/truth_negdensity.h5 --out {o}", "ImageId 0, SphereId 1"),
    "simulate three rows": ("simulate --truth {d}/truth_threerows.h5 --out {o}", "has 3 rows for ImageId 0"),
    "simulate missing field": ("simulate --truth {d}/truth_nofield.h5 --out {o}", "has no field 'SphereId'"),
    "simulate out is truth": ("simulate --truth {d}/truth.h5 --out {d}/truth.h5", "{d}/truth.h5: --out is the input"),
    "simulate --random 0": ("simulate --random 0 --out {o}", "--random N needs N >= 1"),
    "simulate --electrons 0": ("simulate --random 1 --electrons 0 --out {o}", "--electrons: got 0"),
    "simulate --device tpu": ("simulate --random 1 --electrons 5 --grid 8 --device tpu --out {o}", "--device tpu"),
    "simulate --batch 0": ("simulate --random 1 --batch 0 --out {o}", "--batch must be >= 1"),
    "simulate --grid 100000": ("simulate --random 1 --grid 100000 --out {o}", "--grid: got 100000; expected 2..8192"),
    "simulate --grid 1": ("simulate --random 1 --grid 1 --out {o}", "--grid: got 1; expected 2..8192"),
    "simulate --out folder": ("simulate --random 1 --grid 8 --out {d}/folder.h5", "{d}/folder.h5: is a folder"),
    # sevi simulate-frames
    "simulate-frames --frames 0": ("simulate-frames {o} --frames 0", "--frames: got 0"),
    "simulate-frames --per-frame -5": ("simulate-frames {o} --per-frame -5", "--per-frame: got -5.0"),
    "simulate-frames --per-frame nan": ("simulate-frames {o} --per-frame nan", "--per-frame: got nan"),
    "simulate-frames --hits typo": ("simulate-frames {o} --hits shell", "--hits shell: not one of disc"),
    "simulate-frames --hits text": ("simulate-frames {o} --hits {d}/text.h5", "{d}/text.h5: not a readable HDF5"),
    "simulate-frames --hits no table": ("simulate-frames {o} --hits {d}/hits_none.h5", "{d}/hits_none.h5: no Detected"),
    "simulate-frames --hits disc:2": ("simulate-frames {o} --hits disc:2", "disc:R with R in (0, 1]"),
    "simulate-frames --device tpu": ("simulate-frames {o} --device tpu", "--device tpu"),
    "simulate-frames out is hits": ("simulate-frames {d}/frames.h5 --hits {d}/frames.h5", "{d}/frames.h5: OUT is the input"),
    # sevi frames
    "frames missing": ("frames {d}/nope.h5 --out {o} --no-ray", "{d}/nope.h5: no such file"),
    "frames folder": ("frames {d}/folder.h5 --out {o} --no-ray", "{d}/folder.h5: is a directory"),
    "frames text": ("frames {d}/text.h5 --out {o} --no-ray", "{d}/text.h5: not a readable HDF5"),
    "frames random bytes": ("frames {d}/random.h5 --out {o} --no-ray", "{d}/random.h5: not a readable HDF5"),
    "frames truncated": ("frames {d}/cut.h5 --out {o} --no-ray", "{d}/cut.h5: not a readable HDF5"),
    "frames no FinalImage": ("frames {d}/truth.h5 --out {o} --no-ray", "{d}/truth.h5: no 'FinalImage' table"),
    "frames empty FinalImage": ("frames {d}/noframes.h5 --out {o} --no-ray", "{d}/noframes.h5: table 'FinalImage' has no rows"),
    "frames 8x8 frames": ("frames {d}/smallframes.h5 --out {o} --no-ray", "'FinalImage/Image' must be 'u1' (1024, 1024)"),
    "frames --chunk 0": ("frames {d}/frames.h5 --out {o} --no-ray --chunk 0", "--chunk: got 0"),
    "frames --grid 0": ("frames {d}/frames.h5 --out {o} --no-ray --grid 0", "--grid: got 0"),
    "frames --grid 100000": ("frames {d}/frames.h5 --out {o} --no-ray --grid 100000", "--grid: got 100000; "
                                                                                      "expected 1..8192"),
    "frames --out folder": ("frames {d}/frames.h5 --out {d}/folder.h5 --no-ray", "{d}/folder.h5: is a folder"),
    "frames --device tpu": ("frames {d}/frames.h5 --out {o} --no-ray --device tpu", "--device tpu"),
    "frames out is input": ("frames {d}/frames.h5 --out {d}/frames.h5 --no-ray", "{d}/frames.h5: --out is the input"),
    # sevi predict
    "predict images missing": ("predict --model {d}/model --images {d}/nope.h5 --out {o}", "{d}/nope.h5: no such file"),
    "predict images folder": ("predict --model {d}/model --images {d}/folder.h5 --out {o}", "{d}/folder.h5: is a directory"),
    "predict images text": ("predict --model {d}/model --images {d}/text.h5 --out {o}", "{d}/text.h5: not a readable HDF5"),
    "predict no counts": ("predict --model {d}/model --images {d}/truth.h5 --out {o}", "{d}/truth.h5: no dataset 'counts'"),
    "predict 1-D counts": ("predict --model {d}/model --images {d}/img_1d.h5 --out {o}", "{d}/img_1d.h5: dataset 'counts' has shape"),
    "predict NaN pixel": ("predict --model {d}/model --images {d}/img_nan.h5 --out {o}", "{d}/img_nan.h5: image 1, pixel (x 5, z 7) is nan"),
    "predict inf pixel": ("predict --model {d}/model --images {d}/img_inf.h5 --out {o}", "image 1, pixel (x 5, z 7) is inf"),
    "predict negative pixel": ("predict --model {d}/model --images {d}/img_neg.h5 --out {o}", "pixel (x 5, z 7) is -3.0"),
    "predict non-square": ("predict --model {d}/model --images {d}/img_nonsquare.h5 --out {o}", "expected a square image"),
    "predict empty image": ("predict --model {d}/model --images {d}/img_zero.h5 --out {o}", "image 1 holds no electrons"),
    "predict image_id length": ("predict --model {d}/model --images {d}/img_idlen.h5 --out {o}", "image_id has 3 entries"),
    "predict duplicate image_id": ("predict --model {d}/model --images {d}/img_dupid.h5 --out {o}", "image_id: 4 appears 2 times"),
    "predict grid 48": ("predict --model {d}/model --images {d}/img_grid48.h5 --out {o}", "does not rebin exactly"),
    "predict too many electrons": ("predict --model {d}/model --images {d}/img_many.h5 --out {o}", "holds 600000 electrons"),
    "predict tolerance -0.1": ("predict --model {d}/model --images {d}/images.h5 --out {o} --electron-tolerance -0.1",
                               "--electron-tolerance: got -0.1"),
    "predict tolerance nan": ("predict --model {d}/model --images {d}/images.h5 --out {o} --electron-tolerance nan",
                              "--electron-tolerance: got nan"),
    "predict model missing": ("predict --model {d}/nomodel --images {d}/images.h5 --out {o}", "{d}/nomodel: no such model file"),
    "predict model random": ("predict --model {d}/model_random --images {d}/images.h5 --out {o}", "not a model file written by sevi"),
    "predict model empty": ("predict --model {d}/model_empty --images {d}/images.h5 --out {o}", "not a model file written by sevi"),
    "predict model hdf5": ("predict --model {d}/model_hdf5 --images {d}/images.h5 --out {o}", "not a model file written by sevi"),
    "predict model other": ("predict --model {d}/model_other --images {d}/images.h5 --out {o}", "not a model file written by sevi"),
    "predict out is images": ("predict --model {d}/model --images {d}/images.h5 --out {d}/images.h5", "--out is the input --images"),
    "predict out is model": ("predict --model {d}/model --images {d}/images.h5 --out {d}/model/model.pt", "--out is the input --model"),
    "predict --batch 0": ("predict --model {d}/model --images {d}/images.h5 --out {o} --batch 0", "--batch must be >= 1"),
    "predict --device tpu": ("predict --model {d}/model --images {d}/images.h5 --out {o} --device tpu", "--device tpu"),
    # sevi analyze
    "analyze frames missing": ("analyze {d}/nope.h5 --model {d}/model --path events --out {o} --no-ray", "{d}/nope.h5: no such file"),
    "analyze frames text": ("analyze {d}/text.h5 --model {d}/model --path events --out {o} --no-ray", "{d}/text.h5: not a readable HDF5"),
    "analyze no FinalImage": ("analyze {d}/truth.h5 --model {d}/model --path events --out {o} --no-ray", "no 'FinalImage' table"),
    "analyze empty FinalImage": ("analyze {d}/noframes.h5 --model {d}/model --path events --out {o} --no-ray", "'FinalImage' has no rows"),
    "analyze model random": ("analyze {d}/frames.h5 --model {d}/model_random --out {o} --no-ray", "not a model file written by sevi"),
    "analyze out is frames": ("analyze {d}/frames.h5 --model {d}/model --path events --out {d}/frames.h5", "--out is the input FRAMES"),
    "analyze events is frames": ("analyze {d}/frames.h5 --model {d}/model --path events --out {o} --events {d}/frames.h5",
                                 "--events is the input FRAMES"),
    "analyze tolerance nan": ("analyze {d}/frames.h5 --model {d}/model --path events --out {o} --electron-tolerance nan",
                              "--electron-tolerance: got nan"),
    "analyze --chunk 0": ("analyze {d}/frames.h5 --model {d}/model --path events --out {o} --no-ray --chunk 0", "--chunk: got 0"),
    "analyze --device tpu": ("analyze {d}/frames.h5 --model {d}/model --path events --out {o} --device tpu", "--device tpu"),
    "analyze direct --chunk 0": ("analyze {d}/frames.h5 --model {d}/model --out {o} --path direct --chunk 0", "chunk"),
    # sevi fit
    "fit image missing": ("fit {d}/nope.tif --out {o}", "{d}/nope.tif: no such file"),
    "fit mask shape": ("fit {d}/lab.tif --mask {d}/lab_mask40.png --out {o}",
                       "{d}/lab_mask40.png: has 40 x 40 pixels (x, z), the image 48 x 40 pixels (x, z); expected a mask"),
    "fit gain zero": ("fit {d}/lab.tif --gain {d}/lab_gain0.npy --out {o}",
                      "{d}/lab_gain0.npy: pixel (5, 3) has gain 0 and is not masked; expected a finite gain > 0"),
    "fit gain NaN": ("fit {d}/lab.tif --gain {d}/lab_gainnan.npy --out {o}", "{d}/lab_gainnan.npy: pixel (5, 3) has gain nan"),
    "fit colour TIFF": ("fit {d}/lab_rgb.tif --out {o}", "{d}/lab_rgb.tif: page 0 has colour channels (mode RGB); expected one grey"),
    "fit no counts": ("fit {d}/lab_zero.png --out {o}", "{d}/lab_zero.png: has no counts in the pixels it keeps"),
    "fit more shells than separable": ("fit {d}/lab.tif --shells 3 --terms 2 --out {o}",
                                       "{d}/lab.tif: --shells 3: the image shows 1 ring(s)"),
    "fit --shells 7": ("fit {d}/lab.tif --shells 7 --out {o}", "shells: 7; expected 1..4 or 'auto'"),
    "fit --shells two": ("fit {d}/lab.tif --shells two --out {o}", "--shells: 'two'; expected 1..4 or auto"),
    "fit --centre": ("fit {d}/lab.tif --centre 3 --out {o}", "--centre: '3'; expected auto or X,Z"),
    "fit jpg": ("fit {d}/lab.jpg --out {o}", "{d}/lab.jpg: extension '.jpg' is not read; expected one of"),
    "fit out is image": ("fit {d}/lab.tif --out {d}/lab.tif", "{d}/lab.tif: --out is the input IMAGE"),
    "fit a stack of images": ("fit {d}/images.h5 --out {o}", "{d}/images.h5: dataset 'counts' holds 2 images; expected one"),
}


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_gives_one_clear_line_and_loses_nothing(d, case, tmp_path, capsys):
    argv, expected = CASES[case]
    out = tmp_path / "out.h5"
    before = digests(d)
    rc = main([a.format(d=d, o=out) for a in argv.split()] + (["--device", "cpu"] if "--device" not in argv
                                                              and not argv.startswith("frames") else []))
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"{case}: exit {rc}, stderr {err!r}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, f"{case}: {err!r}"
    assert err.startswith(f"sevi {argv.split()[0]}: ") or err.startswith("sevi frames: "), err
    assert expected.format(d=d) in err, f"{case}: expected {expected.format(d=d)!r} in {err!r}"
    assert digests(d) == before, f"{case}: an input file changed"
    assert list(tmp_path.rglob("*")) == [], f"{case}: an output was written: {list(tmp_path.rglob('*'))}"


def test_debug_shows_the_traceback(d, tmp_path):
    from sevi.io.tables import TableError
    with pytest.raises(TableError, match="has no rows"):
        main(["--debug", "simulate", "--truth", str(d / "truth_empty.h5"), "--out", str(tmp_path / "o.h5")])
    with pytest.raises(TableError, match="has no rows"):
        main(["simulate", "--truth", str(d / "truth_empty.h5"), "--out", str(tmp_path / "o.h5"), "--debug"])
