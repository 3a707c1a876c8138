"""tools/compare_lab_images.py end to end on small images (the cases swapped for 72 x 64 ones)."""

import json

import pytest

from sevi.evaluation.lab_images import LabCase, truth_betas
from tools import compare_lab_images


def test_cross_check_and_acceptance_write_json_and_png(tmp_path, monkeypatch):
    pytest.importorskip("abel")

    def small(n_terms=2, seed=0):
        return {"1 shell": LabCase((72, 64), (40.3, 29.6), (0.3,), (0.012,), (5e4,), truth_betas(1, n_terms, 0),
                                   2 / 128, 0.2),
                "2 shells": LabCase((72, 64), (33.8, 34.1), (0.22, 0.4), (0.01, 0.013), (4e4, 6e4),
                                    truth_betas(2, n_terms, 1), 2 / 128, 0.2)}

    monkeypatch.setattr(compare_lab_images, "cross_check_cases", small)
    res = compare_lab_images.main(["--terms", "2", "--seeds", "1", "--draws", "1", "--out", str(tmp_path)])
    assert [r["ours"]["n_shells"] for r in res["cross_check"]] == [1, 2]
    for r in res["cross_check"]:
        assert 0 < r["floor"] < r["pyabel"]["distance"] and r["ours"]["distance"] < 5 * r["floor"]
    s = res["summary"]
    assert 0.9 < s["distance_free_over_known"] < 1.1 and s["floor_masked_over_free"] >= 1
    assert json.loads((tmp_path / "compare_lab_images.json").read_text())["terms"] == 2
    assert (tmp_path / "compare_lab_images.png").stat().st_size > 1000
