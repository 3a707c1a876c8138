"""sevi.evaluation.centroid_scoring: matching found spots to true hits, split by neighbour distance."""
import numpy as np

from sevi.evaluation.centroid_scoring import evaluate


def test_evaluate_counts_matches_within_tolerance_by_neighbour_distance():
    truth = [np.array([[100.0, 100.0], [105.0, 100.0], [400.0, 400.0]])]
    found = [np.array([[100.5, 100.0], [108.0, 100.0], [400.0, 401.0], [700.0, 700.0]])]
    r = evaluate(truth, found, tol=1.5, overlap_px=23.0)
    assert r["n_true"] == 3 and r["n_found"] == 4
    assert abs(r["recall"] - 2 / 3) < 1e-12 and abs(r["precision"] - 2 / 4) < 1e-12
    # The pair (5 px apart) sits in the 3-6 px bin with one of two found; the loner is found.
    assert abs(r["nn_fraction"][1] - 2 / 3) < 1e-12 and r["nn_recall"][1] == 0.5 and r["nn_recall"][-1] == 1.0
