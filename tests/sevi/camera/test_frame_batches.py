"""sevi.camera.frame_batches: exact whole and batch sums, streamed in any chunking."""
import numpy as np
import pytest

from sevi.camera.frame_batches import FrameBatcher


def _frames(n, G=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, G, G), dtype=np.uint8)


@pytest.mark.parametrize("chunks", [[10], [1] * 10, [4, 3, 3], [7, 3]])
def test_batches_are_contiguous_and_sum_to_the_whole(chunks):
    f = _frames(10)
    acc = FrameBatcher(10, 4, grid=4)
    a = 0
    for c in chunks:
        acc.add(f[a:a + c])
        a += c
    s = acc.result()
    np.testing.assert_array_equal(s.total, f.sum(0, dtype=np.int64))
    ids = np.arange(10) * 4 // 10  # 0 0 0 1 1 2 2 2 3 3
    np.testing.assert_array_equal(s.batch_frames, np.bincount(ids))
    for b in range(4):
        np.testing.assert_array_equal(s.batch_sums[b], f[ids == b].sum(0, dtype=np.int64).reshape(4, 2, 4, 2).sum((1, 3)))
    np.testing.assert_array_equal(s.batch_sums.sum(0), s.total.reshape(4, 2, 4, 2).sum((1, 3)))


def test_without_batches_only_the_whole_sum():
    f = _frames(5)
    acc = FrameBatcher(5)
    acc.add(f[:2])
    acc.add(f[2:])
    s = acc.result()
    assert s.batch_sums is None and s.batch_frames is None and s.n_frames == 5
    assert s.total.dtype == np.int64
    np.testing.assert_array_equal(s.total, f.sum(0, dtype=np.int64))


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="expected 0"):
        FrameBatcher(3, 4)
    acc = FrameBatcher(3, 3, grid=3)
    with pytest.raises(ValueError, match="block-sum"):
        acc.add(_frames(1))
    acc = FrameBatcher(3)
    with pytest.raises(ValueError, match="more than the 3"):
        acc.add(_frames(4))
    acc = FrameBatcher(3)
    acc.add(_frames(2))
    with pytest.raises(ValueError, match="2 frames of the 3"):
        acc.result()
