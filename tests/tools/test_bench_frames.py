"""The frame benchmark's scoring: matching, nearest-neighbour split and the Cramér–Rao ceiling."""
import numpy as np

from sevi.camera.frames import FrameModel
from sevi.camera.recall_ceiling import cluster_match_probability, pair_match_probability
from tools.bench_frames import evaluate


def test_evaluate_counts_matches_within_tolerance_by_neighbour_distance():
    truth = [np.array([[100.0, 100.0], [105.0, 100.0], [400.0, 400.0]])]
    found = [np.array([[100.5, 100.0], [108.0, 100.0], [400.0, 401.0], [700.0, 700.0]])]
    r = evaluate(truth, found, tol=1.5, overlap_px=23.0)
    assert r["n_true"] == 3 and r["n_found"] == 4
    assert abs(r["recall"] - 2 / 3) < 1e-12 and abs(r["precision"] - 2 / 4) < 1e-12
    # The pair (5 px apart) sits in the 3-6 px bin with one of two found; the loner is found.
    assert abs(r["nn_fraction"][1] - 2 / 3) < 1e-12 and r["nn_recall"][1] == 0.5 and r["nn_recall"][-1] == 1.0


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


def test_bench_frames_runs_end_to_end_with_the_oracle_on_a_disc(capsys):
    import re

    from tools.bench_frames import main
    main(["--frames", "2", "--hits", "disc:0.5", "--scipy-frames", "1", "--threads", "1", "--oracle"])
    out = capsys.readouterr().out
    ours = float(re.search(r"^ours\s+([0-9.]+)", out, re.M).group(1))
    truth_fit = float(re.search(r"MAP fit started at the truth.*recall ([0-9.]+)", out).group(1))
    assert 0.7 < ours <= 1.0 and 0.7 < truth_fit <= 1.0
    assert "whole clusters" in out and "from-truth" in out
