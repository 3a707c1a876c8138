"""tools/information_limit.py and tools/eval_refine.py end to end on tiny settings."""

import json
import math

import pytest

from tools import eval_refine, information_limit


def test_information_limit_writes_floors_per_detector(tmp_path):
    res = information_limit.main(["--settings", "64:20000", "--n", "3", "--out", str(tmp_path), "--device", "cpu"])
    r = res["results"][0]
    assert r["grid"] == 64 and r["n"] == 3
    for det in ("histogram", "events", "direct"):
        crb, bayes = r["per_image"][det]["crb"], r["per_image"][det]["bayes"]
        assert all(0 < b < c < math.inf for b, c in zip(bayes, crb)), det
    # fewer electrons seen, higher floors
    assert all(e > h for e, h in zip(r["per_image"]["events"]["crb"], r["per_image"]["histogram"]["crb"]))
    assert json.loads((tmp_path / "information_limit.json").read_text())["results"][0]["n"] == 3
    assert (tmp_path / "information_limit.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return tiny_model_dir


def test_eval_refine_runs_every_predictor_it_can(tmp_path, tiny_model):
    res = eval_refine.main(["--model", str(tiny_model), "--n", "2", "--grid", "64", "--electrons", "3000",
                            "--no-classical", "--out", str(tmp_path / "ev"), "--device", "cpu"])
    s = res["summary"]
    assert set(s) == {"regressor", "refined", "truth_start", "floor_crb", "floor_bayes"}
    assert res["converged_fraction"] == 1.0 and 0 <= res["landed_fraction"] <= 1
    # the refinement starts from the (untrained) regressor and must end closer to the truth
    assert s["refined"]["all"]["mean"] < s["regressor"]["all"]["mean"]
    assert (tmp_path / "ev" / "eval_refine.json").exists()


def test_compare_renderers_pairs_the_same_parameters(tiny_model):
    from tools import compare_renderers
    out = compare_renderers.main(["--model", str(tiny_model), "--n", "4", "--grid", "32", "--electrons", "3000",
                                  "--device", "cpu"])
    assert set(out["mean"]) == {"itm_a", "itm_b", "poisson"}
    assert all(math.isfinite(v["se"]) for k, v in out.items() if k.endswith("_minus_itm_a"))
