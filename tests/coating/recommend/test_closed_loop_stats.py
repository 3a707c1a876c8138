"""coating.recommend.closed_loop_stats and tools/pool_closed_loop.py: pooling of closed-loop JSON files and the cycle bootstrap."""
import json

import numpy as np
import pytest

from coating.recommend.closed_loop_stats import load_cycles, targets
from sevi.runtime.errors import InputError
from tools.pool_closed_loop import main


def _write(d, per_run, loop_runs):
    d.mkdir()
    doc = {"per_run": {m: np.asarray(v).tolist() for m, v in per_run.items()},
           "cycles": [{"loop_runs": n} for n in loop_runs]}
    (d / "closed_loop.json").write_text(json.dumps(doc))


def test_pools_runs_not_medians_and_splits_cycles(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = {"ours_robust": rng.uniform(0, 1, (6, 2)), "physics_ls": rng.uniform(1, 2, (6, 2)),
         "unchanged": rng.uniform(2, 3, (6, 2))}
    b = {m: v[:4] + 0.5 for m, v in a.items()}
    _write(tmp_path / "a", a, [2, 4])
    _write(tmp_path / "b", b, [4])
    cycles = load_cycles([str(tmp_path / "a"), str(tmp_path / "b")])
    assert [len(c["ours_robust"]) for c in cycles] == [2, 4, 4]
    t = targets(cycles, "ours_robust")
    ours = np.concatenate([a["ours_robust"], b["ours_robust"]])
    assert t["p90"] == pytest.approx(np.percentile(ours, 90))
    assert t["median_vs_unchanged"] == pytest.approx(
        np.median(ours) / np.median(np.concatenate([a["unchanged"], b["unchanged"]])))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--draws", "50"]) == 0
    assert "median_vs_physics_ls" in capsys.readouterr().out


def test_lengths_that_do_not_match_the_cycles_are_refused(tmp_path):
    _write(tmp_path / "a", {"ours_robust": np.zeros((5, 2)), "physics_ls": np.ones((5, 2)),
                            "unchanged": np.ones((5, 2))}, [2, 2])
    with pytest.raises(InputError, match="do not add up"):
        load_cycles([str(tmp_path / "a")])
    with pytest.raises(InputError, match="not a closed_loop.json"):
        load_cycles([str(tmp_path / "missing")])


def test_tail_comparison_sees_a_shared_tail():
    from coating.recommend.closed_loop_stats import tail_comparison
    rng = np.random.default_rng(1)
    ref = rng.gamma(2.0, 0.3, (400, 2))
    same = {"ours_robust": ref * 1.1, "oracle": ref}
    t = tail_comparison(same, "ours_robust", "oracle")
    assert t["correlation"] > 0.999 and t["ref_mean_on_worst"] > 2 * t["ref_mean"]
    assert abs(t["p90_F"] - 1.1 * t["ref_p90_F"]) < 1e-12
    other = {"ours_robust": rng.gamma(2.0, 0.3, (400, 2)), "oracle": ref}
    t = tail_comparison(other, "ours_robust", "oracle")
    assert abs(t["correlation"]) < 0.15 and t["ref_mean_on_worst"] < 1.3 * t["ref_mean"]


def test_p90_difference_resamples_both_methods_on_the_same_cycles():
    from coating.recommend.closed_loop_stats import p90_difference
    rng = np.random.default_rng(2)
    cycles = [{"ours_robust": v + 0.1, "oracle_lagged": v} for v in
              (rng.gamma(2.0, 0.3 * (1 + k), (20, 2)) for k in range(8))]
    d = p90_difference(cycles, "ours_robust", "oracle_lagged", 300, np.random.default_rng(0))
    # A constant shift moves every quantile by itself: the paired difference has no spread,
    # while each method's own p90 varies a lot between resamples of these unequal cycles.
    assert d["diff"] == pytest.approx(0.1) and d["diff_hi"] - d["diff_lo"] < 1e-9
    assert d["ref_hi"] - d["ref_lo"] > 0.2
    assert d["ref_p90"] == pytest.approx(np.percentile(np.concatenate([c["oracle_lagged"] for c in cycles]), 90))


def test_folders_of_the_same_plants_join_with_plus(tmp_path):
    rng = np.random.default_rng(3)
    base = {"physics_ls": rng.uniform(1, 2, (4, 2)), "unchanged": rng.uniform(2, 3, (4, 2))}
    _write(tmp_path / "a", {**base, "ours_robust": rng.uniform(0, 1, (4, 2))}, [2, 2])
    _write(tmp_path / "ref", {**base, "oracle_lagged": rng.uniform(0, 1, (4, 2))}, [2, 2])
    cycles = load_cycles([f"{tmp_path / 'a'}+{tmp_path / 'ref'}"])
    assert len(cycles) == 2 and set(cycles[0]) == {"physics_ls", "unchanged", "ours_robust", "oracle_lagged"}
    _write(tmp_path / "other", {**base, "physics_ls": base["physics_ls"] + 0.1}, [2, 2])
    with pytest.raises(InputError, match="not the same runs"):
        load_cycles([f"{tmp_path / 'a'}+{tmp_path / 'other'}"])
    # Without the join, only the methods every folder holds are pooled.
    assert set(load_cycles([str(tmp_path / "a"), str(tmp_path / "ref")])[0]) == {"physics_ls", "unchanged"}


def test_plan_records_are_pooled_by_cycle_and_their_coverage_printed(tmp_path, capsys):
    from coating.recommend.closed_loop_stats import load_plans
    rec = lambda m, lo, hi, care: {"measured": m, "interval": [[0.5, 0.5], lo, hi], "care": care,  # noqa: E731
                                   "calibration": [], "wall_s": 1.0, "cpu_s": 1.0}
    per_run = {"ours_robust": [[0.3, 0.3]] * 3, "physics_ls": [[1.0, 1.0]] * 3, "unchanged": [[2.0, 2.0]] * 3}
    for name, plans in (("a", [[rec([0.3, 0.3], [0.1, 0.1], [0.9, 0.9], [])] * 2, [rec([0.3, 2.0], [0.1, 0.1], [0.9, 0.9], ["few_runs"])]]),):
        d = tmp_path / name
        d.mkdir()
        doc = {"per_run": per_run, "cycles": [{"loop_runs": 2, "plans": {"ours_robust": plans[0]}},
                                              {"loop_runs": 1, "plans": {"ours_robust": plans[1]}}]}
        (d / "closed_loop.json").write_text(json.dumps(doc))
    got = load_plans([str(tmp_path / "a")], "ours_robust")
    assert [len(c) for c in got] == [2, 1] and load_plans([str(tmp_path / "a")], "ours") == []
    assert main([str(tmp_path / "a"), "--draws", "20"]) == 0
    out = capsys.readouterr().out
    assert "coverage 83.3 %" in out and "flagged 33.3 % (few_runs 33.3 %)" in out and "0 failure(s)" in out
