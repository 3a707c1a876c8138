"""``sevi.io.image_file`` through ``sevi predict``: image files as lab software writes them.

Every integer dtype, signed or unsigned, of either byte order, and whole-number floats give the
answer the int32 file gives; fractions, negatives, complex values, a stack of no images, ids
beyond the Answer's 32-bit ImageId and ids that are floats are refused in one line, exit 2."""

import h5py
import numpy as np
import pytest
import torch

from sevi.cli.main import main
from sevi.io.image_file import open_images
from sevi.io.tables import read_answer
from sevi.regressor.inference import check_images

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    """Three 32^2 images of ~6000 electrons (the tiny model's range), int32, and the Answer of them."""
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.prior import PriorConfig

    res, _ = SeviGenerator(GeneratorConfig(grid=32), "cpu", PriorConfig().with_electrons(3000))(1, 3)
    return res.images.numpy().astype(np.int32)


def write(path, counts, ids=None, name="counts"):
    with h5py.File(path, "w") as f:
        f[name] = counts
        if ids is not None:
            f["image_id"] = ids
    return path


def predict(model, images, out, *extra):
    return main(["predict", "--model", str(model), "--images", str(images), "--out", str(out), "--device", "cpu",
                 "--no-refine", *extra])


@pytest.fixture(scope="module")
def reference(tiny_model_dir, counts, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    assert predict(tiny_model_dir, write(d / "i.h5", counts, np.arange(3, dtype=np.int32)), d / "a.h5") == 0
    return read_answer(d / "a.h5")


@pytest.mark.parametrize("dtype", ["<u1", "<i1", "<u2", ">u2", "<i2", "<u4", ">u4", ">i4", "<i8", ">i8", "<u8",
                                   ">u8", "<f2", "<f4", ">f4", "<f8", ">f8"])
def test_every_integer_dtype_either_byte_order_and_whole_floats_give_the_int32_answer(
        tiny_model_dir, counts, reference, tmp_path, dtype):
    c = counts if np.dtype(dtype).itemsize > 1 else np.minimum(counts, 127)  # 8 bits: up to 127 per pixel
    if np.dtype(dtype).itemsize == 1:
        assert c.sum((1, 2)).min() > 4000, "still inside the model's electron range"
    path = write(tmp_path / "i.h5", c.astype(dtype), np.arange(3).astype(">i8"))
    assert predict(tiny_model_dir, path, tmp_path / "a.h5") == 0
    got = read_answer(tmp_path / "a.h5")
    assert got["ImageId"].tolist() == [0, 0, 1, 1, 2, 2]
    if np.dtype(dtype).itemsize > 1:
        np.testing.assert_array_equal(got, reference)


def test_a_refined_answer_reads_uint32_as_it_reads_int32(tiny_model_dir, counts, tmp_path):
    """The fit reads the images too (the uint32 traceback was in the non-negativity check)."""
    for dt in ("<i4", "<u4"):
        assert main(["predict", "--model", str(tiny_model_dir), "--images",
                     str(write(tmp_path / f"{dt[1:]}.h5", counts.astype(dt), np.arange(3))),
                     "--out", str(tmp_path / f"a{dt[1:]}.h5"), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(read_answer(tmp_path / "ai4.h5"), read_answer(tmp_path / "au4.h5"))


@pytest.mark.parametrize("case, make, expected", [
    ("fractions", lambda c: c + 0.5, "pixel (x 0, z 0) is 0.5; expected whole electron counts"),
    ("negative float", lambda c: np.where(np.arange(32) == 3, -2.0, c), "is -2.0; expected electron counts >= 0"),
    ("negative int16", lambda c: np.where(np.arange(32) == 3, -2, c).astype("<i2"),
     "is -2; expected electron counts >= 0"),
    ("complex", lambda c: c.astype(np.complex128), "dataset 'counts' holds complex numbers (complex128)"),
    ("bool", lambda c: c > 0, "dataset 'counts' holds booleans"),
    ("text", lambda c: np.array([b"1"] * 3), "dataset 'counts' holds text"),
    ("no images", lambda c: c[:0], "dataset 'counts' holds no images (shape (0, 32, 32))"),
    ("nan", lambda c: np.where(np.arange(32) == 3, np.nan, c), "is nan; expected finite electron counts"),
])
def test_what_is_not_counts_is_refused_in_one_line(tiny_model_dir, counts, tmp_path, capsys, case, make, expected):
    ids = np.arange(3, dtype=np.int32)
    c = make(counts)
    path = write(tmp_path / "i.h5", c, ids[:len(c)] if c.ndim == 3 else None)
    assert predict(tiny_model_dir, path, tmp_path / "a.h5") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err and str(path) in err, err
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("ids, ok, expected", [
    (np.array([0, 1, 2**31 - 1], "<i8"), True, None),
    (np.array([-2**31, 5, 7], ">i8"), True, None),
    (np.array([0, 1, 2**31], "<i8"), False, "image_id 2147483648 (image 2) does not fit the Answer's ImageId, "
                                            "a 32-bit integer"),
    (np.array([0, 1, 2**32 + 1], "<u8"), False, "image_id 4294967297 (image 2) does not fit"),
    (np.array([-2**31 - 1, 1, 2], "<i8"), False, "image_id -2147483649 (image 0) does not fit"),
    (np.array([0.0, 1.0, 2.0]), False, "image_id has dtype float64; expected integer ids"),
    (np.array([0, 1], "<i4"), False, "image_id has 2 entries, counts 3 images"),
])
def test_image_ids_are_kept_exactly_or_refused_never_wrapped(tiny_model_dir, counts, tmp_path, capsys, ids, ok,
                                                              expected):
    path = write(tmp_path / "i.h5", counts, ids)
    rc = predict(tiny_model_dir, path, tmp_path / "a.h5")
    err = capsys.readouterr().err
    if ok:
        assert rc == 0 and read_answer(tmp_path / "a.h5")["ImageId"].tolist() == np.repeat(ids, 2).tolist()
    else:
        assert rc == 2 and expected in err and len(err.splitlines()) == 1, err


def test_the_reader_hands_on_native_int64_or_float64(tmp_path, counts):
    for dt, want in ((">u2", np.int64), ("<u4", np.int64), (">f4", np.float64), ("<i1", np.int64)):
        with open_images(write(tmp_path / "i.h5", counts.astype(dt), np.arange(3))) as im:
            got = im.read(1, 3)
            assert got.dtype == want and got.dtype.isnative and got.shape == (2, 32, 32)
            assert im.image(2).shape == (32, 32) and im.n == 3 and im.ids.dtype == np.int32
    with open_images(write(tmp_path / "one.h5", counts[0].astype(">i4"), name="image")) as im:
        assert im.ids is None and im.n == 1 and im.read().shape == (1, 32, 32)


def test_check_images_compares_every_integer_type():
    """torch has no '<' for uint32 on the CPU ("lt_cpu" not implemented for 'UInt32')."""
    c = torch.from_numpy(np.ones((1, 4, 4), np.uint32) * 3)
    check_images(c)
    with pytest.raises(ValueError, match="expected real electron counts"):
        check_images(torch.ones((1, 4, 4), dtype=torch.complex64))
