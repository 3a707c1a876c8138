"""sevi.evaluation.centred_course: the draws and the summary the centre's acceptance is read from."""

import numpy as np
import pytest

from sevi.evaluation.centred_course import draw_offset_case, evaluate_centred, summarise_centred
from sevi.physics.prior import PriorConfig


def test_a_draw_is_off_centre_by_at_most_the_offset_and_reproducible():
    prior = PriorConfig().with_electrons(50_000)
    p, c, img = draw_offset_case(prior, 64, 3.0, 4)
    p2, c2, img2 = draw_offset_case(prior, 64, 3.0, 4)
    assert (np.abs(c - 31.5) <= 3.0).all() and np.array_equal(img, img2) and np.array_equal(c, c2)
    assert img.shape == (64, 64) and img.sum() == pytest.approx(float(p.n_electrons.sum()), rel=0.02)


def test_the_measurement_finds_the_centre_and_summarises_it():
    rows = evaluate_centred(2, 64, (150_000, 200_000), 2.0, seed=3, progress=False)
    assert len(rows) == 2 and all(r["converged"] for r in rows)
    assert all(abs(z) < 4 for r in rows for z in r["centre_z"])
    s = summarise_centred(rows)
    assert s["n"] == 2 and s["all_converged"] and 0.9 < s["distance_ratio_of_means"] < 1.1
    assert s["z_rms"] == pytest.approx(np.sqrt(np.mean(np.square([r["centre_z"] for r in rows]))))
