"""sevi.camera.recall_ceiling: the Cramér–Rao ceilings of a centroider's recall, pairs and clusters."""
import numpy as np

from sevi.camera.frames import FrameModel
from sevi.camera.recall_ceiling import cluster_match_probability, pair_match_probability


def test_pair_probability_rises_with_separation_and_is_one_when_far_or_mergeable():
    p = pair_match_probability(np.array([2.0, 4.0, 6.0, 9.0, 30.0]), FrameModel(), 1.5, draws=4000)
    assert p[0] == 1.0                   # <= 2 tol: the midpoint matches both
    assert p[1] < p[2] < p[3] <= 1.0 and p[1] < 0.8
    assert p[4] > 0.999                  # isolated: CRB ~0.16 px per axis << 1.5 px


def test_cluster_probability_agrees_with_the_pair_bound_and_falls_in_a_chain():
    m = FrameModel()
    # A lone pair 8 px apart: the cluster bound is the pair bound (both from the same Fisher matrix;
    # the sampling of P(|e| <= tol) differs, 4000 against 20000 draws).
    pair = np.array([[300.0, 300.0], [308.0, 300.0], [700.0, 700.0]])
    pc = cluster_match_probability(pair, m, 1.5)
    pp = pair_match_probability(np.array([8.0]), m, 1.5)[0]
    assert abs(pc[0] - pp) < 0.03 and abs(pc[1] - pp) < 0.03 and pc[2] == 1.0
    # The middle of a chain of three, 8 px apart, has two neighbours: less information than a pair.
    chain = np.array([[300.0, 300.0], [308.0, 300.0], [316.0, 300.0]])
    assert cluster_match_probability(chain, m, 1.5)[1] < pp - 0.05
    # Closer than 2 tol: one estimate at the midpoint matches both.
    assert (cluster_match_probability(np.array([[300.0, 300.0], [302.0, 300.0]]), m, 1.5) == 1.0).all()
