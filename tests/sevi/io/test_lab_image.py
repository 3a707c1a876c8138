"""sevi/io/lab_image.py: every format a lab's camera software writes, read to the fit's axes
(axis 0 = x, the file's columns), and the files it refuses with one line."""

import h5py
import numpy as np
import pytest
from PIL import Image

from sevi.io.lab_image import read_array, read_lab_image
from sevi.runtime.errors import InputError

ROWS_Z = (np.arange(30 * 20).reshape(30, 20) * 97 % 60000)  # a camera file: 30 rows (z) x 20 columns (x)


@pytest.mark.parametrize("name, data, what", [
    ("a.npy", ROWS_Z.astype(np.uint16), ".npy uint16"),
    ("a16.tif", ROWS_Z.astype(np.uint16), "TIF 16-bit grey"),
    ("a16be.tiff", ROWS_Z.astype(">u2"), "TIFF 16-bit grey"),
    ("a32.tif", ROWS_Z.astype(np.int32) * 1000, "TIF 32-bit integer grey"),
    ("af.tif", ROWS_Z.astype(np.float32) / 7, "TIF 32-bit float grey"),
    ("a16.png", ROWS_Z.astype(np.uint16), "PNG 16-bit grey"),
    ("a8.png", (ROWS_Z % 256).astype(np.uint8), "PNG 8-bit grey"),
])
def test_formats_are_read_exactly_and_transposed(tmp_path, name, data, what):
    p = tmp_path / name
    np.save(p, data) if name.endswith(".npy") else Image.fromarray(data).save(p)
    got = read_array(p)
    assert got.data.shape == (20, 30) and got.what == what
    np.testing.assert_array_equal(got.data, data.astype(np.float64).T)
    assert got.data.dtype in (np.int64, np.float64) and got.data.dtype.isnative


def test_multi_page_tiff_is_summed(tmp_path):
    a = ROWS_Z.astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "m.tif", save_all=True, append_images=[Image.fromarray(a // 2)])
    got = read_array(tmp_path / "m.tif")
    np.testing.assert_array_equal(got.data, (a.astype(np.int64) + a // 2).T)
    assert "2 pages summed" in got.what


def test_course_hdf5_keeps_its_axes(tmp_path):
    img = np.arange(12 * 10).reshape(12, 10)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["image"] = img
    with h5py.File(tmp_path / "stack1.h5", "w") as f:
        f["counts"] = img[None]
    for name in ("one.h5", "stack1.h5"):
        np.testing.assert_array_equal(read_array(tmp_path / name).data, img)


def test_mask_and_gain_beside_the_image(tmp_path):
    Image.fromarray(ROWS_Z.astype(np.uint16)).save(tmp_path / "img.tif")
    Image.fromarray((ROWS_Z % 3 == 0).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.fromarray(np.full((30, 20), 0.9, np.float32)).save(tmp_path / "gain.tif")
    img, mask, gain = read_lab_image(tmp_path / "img.tif", tmp_path / "mask.png", tmp_path / "gain.tif")
    assert img.data.shape == mask.data.shape == gain.data.shape == (20, 30)
    np.testing.assert_array_equal(mask.data > 0, (ROWS_Z % 3 == 0).T)
    assert read_lab_image(tmp_path / "img.tif")[1:] == (None, None)


@pytest.mark.parametrize("make, match", [
    (lambda p: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p / "x.tif"), r"x.tif: page 0 has colour channels \(mode RGB\)"),
    (lambda p: Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(p / "x.png"), r"x.png: page 0 has colour channels \(mode RGBA\)"),
    (lambda p: np.save(p / "x.npy", np.zeros((8, 8, 3))), r"x.npy: has shape \(8, 8, 3\), colour channels"),
    (lambda p: np.save(p / "x.npy", np.zeros(8)), r"x.npy: has shape \(8,\); expected one grey channel"),
    (lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object)), r"x.npy: not a NumPy array file of numbers"),
    (lambda p: (p / "x.tif").write_bytes(b"II*\x00 not a tiff"), r"x.tif: not an image Pillow can read"),
    (lambda p: (p / "x.bmp").write_bytes(b"BM"), r"x.bmp: extension '.bmp' is not read"),
])
@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_refused_files_are_one_line(tmp_path, make, match):
    make(tmp_path)
    name = next(p for p in tmp_path.iterdir())
    with pytest.raises(InputError, match=match) as e:
        read_array(name)
    assert "\n" not in str(e.value)


def test_hdf5_stack_and_direct_image_are_refused(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["counts"] = np.zeros((2, 8, 8))
        f["image_id"] = np.arange(2)
    with pytest.raises(InputError, match="holds 2 images; expected one"):
        read_array(tmp_path / "s.h5")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["image"] = np.zeros((8, 8))
        f["image"].attrs["n_frames"] = 100
    with pytest.raises(InputError, match="is a direct image"):
        read_array(tmp_path / "d.h5")
