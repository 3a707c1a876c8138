"""sevi/evaluation/lab_images.py: the cross-check's pieces (tools/compare_lab_images.py): the
information limit of the fit's model, PyAbel's answer through our axes, the acceptance mask."""

import numpy as np
import pytest

from sevi.evaluation.lab_images import (
    LabCase,
    acceptance_mask,
    information_distance,
    pyabel_answer,
    render_case,
    truth_betas,
)

L = 4
CASE = LabCase((96, 88), (50.3, 41.6), (0.2, 0.36), (0.01, 0.012), (1e5, 1.5e5), truth_betas(2, L, 0), 2 / 128, 0.2)


def test_information_limit_orders():
    free = information_distance(CASE)
    known = information_distance(CASE, fix_centre=True)
    masked = information_distance(CASE, keep=~acceptance_mask(CASE))
    half = information_distance(LabCase(**{**CASE.__dict__, "n_electrons": (2e5, 3e5)}))
    assert 0 < known <= free * (1 + 1e-9) and masked > free
    assert half == pytest.approx(free / np.sqrt(2), rel=0.05)  # twice the electrons: 1/sqrt(2) the Distance


def test_acceptance_mask_cuts_both_shells():
    m = acceptance_mask(CASE)
    r = np.hypot(*np.meshgrid(np.arange(96) - CASE.centre[0], np.arange(88) - CASE.centre[1], indexing="ij")) * 2 / 128
    for R in CASE.R:
        assert m[np.abs(r - R) < 0.01].any()


def test_pyabel_answer_in_our_axes():
    pytest.importorskip("abel")
    img = render_case(CASE, 0)
    a = pyabel_answer(img, np.array(CASE.R) * 64, np.array(CASE.sigma_R) * 64, L)
    assert np.all(np.abs(a["centre"] - CASE.centre) < 1.0)  # (x0, z0), not (row, column)
    assert np.all(np.abs(a["beta"][:, 0] - CASE.beta[:, 0]) < 0.1)  # beta_2 of each shell, z the symmetry axis
