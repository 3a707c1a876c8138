"""sevi.evaluation.frames_benchmark.summarise: the figures the frames-to-the-limit table is made of."""
import numpy as np
import pytest

from sevi.evaluation.frames_benchmark import summarise


def _row(kind, direct, oracle, chi2, z, separation=0.2):
    return {"kind": kind, "direct": direct, "oracle": oracle, "floor_bayes": oracle, "regressor": 0.1,
            "separation": separation,
            "direct_chi2_dof": chi2, "direct_converged": True, "landed": chi2 < 1.5,
            "z_beta": np.full((2, 12), z).tolist(), "z_R": [z, -z], "z_sigma_R": [z, z]}


def test_ratios_flags_and_the_calibration_without_named_misfits():
    rows = [_row("prior", 0.010, 0.010, 1.0, 1.0), _row("crowded", 0.012, 0.010, 0.9, -1.0),
            _row("overlapping", 0.030, 0.010, 2.4, 40.0)]
    s = summarise(rows)
    assert s["all"]["n"] == 3 and s["all"]["flagged"] == 1
    assert s["all"]["ratio_of_medians"] == pytest.approx(0.012 / 0.010)
    assert s["all"]["worst_ratio"] == pytest.approx(3.0)
    assert s["all"]["landed"] == pytest.approx(2 / 3)
    assert s["calibration"]["beta_2..6"]["z_std"] > 10  # the misfit's z-scores dominate
    unflagged = s["calibration_unflagged"]
    assert unflagged["beta_2..6"]["n"] == 12 and unflagged["beta_2..6"]["z_std"] == pytest.approx(1.0)
    assert unflagged["R"]["within_68"] == 1.0 and unflagged["R"]["n"] == 4


def test_the_resolved_group_leaves_out_shells_closer_than_a_camera_spot():
    rows = [_row("prior", 0.010, 0.010, 1.0, 1.0), _row("overlapping", 0.02, 0.01, 1.0, 8.0, separation=0.004),
            _row("overlapping", 0.02, 0.01, 1.0, -1.0, separation=0.016)]
    s = summarise(rows)
    assert s["calibration_unflagged"]["beta_2..6"]["z_std"] > 3  # the unresolved pair's z-scores
    resolved = s["calibration_unflagged_resolved"]
    assert resolved["beta_2..6"]["n"] == 12 and resolved["beta_2..6"]["z_std"] == pytest.approx(1.0)


def test_the_fits_own_floor_in_the_summary():
    rows = [dict(_row("prior", 0.010, 0.010, 1.0, 1.0), fit_floor=0.011),
            dict(_row("overlapping", 0.020, 0.008, 1.0, 1.0), fit_floor=0.016)]
    s = summarise(rows)["all"]
    assert s["fit_floor_median"] == pytest.approx(0.0135)
    assert s["worst_ratio_to_fit_floor"] == pytest.approx(0.020 / 0.016)
    assert s["fit_floor_over_floor_max"] == pytest.approx(0.016 / 0.008)
    assert "fit_floor_median" not in summarise([_row("prior", 0.01, 0.01, 1.0, 1.0)])["all"]


def test_the_fits_floor_lies_above_the_hits_floor():
    """The frame sum is a function of the detected hits and independent noise: the fit's
    information at the truth is below the hits', so its floor is above theirs."""
    from sevi.evaluation.frames_benchmark import draw_measurements, frame_sum_floors
    from sevi.physics.forward import ExpectedImage, ForwardConfig
    from sevi.physics.information import fisher_information, image_floors, prior_precision
    from sevi.physics.prior import PriorConfig

    m = draw_measurements(1, (2000, 2000), seed=3)[0]
    prior = PriorConfig().with_electrons(72_000, 100_000)
    detected = int(0.9 * float(m.params.n_electrons.sum()))
    fit = frame_sum_floors(m, detected, prior, "cpu")["fit_floor"]
    F = fisher_information(ExpectedImage(ForwardConfig(grid=512, n_terms=prior.n_terms), "cpu"), m.params.R[0],
                           m.params.sigma_R[0], m.params.n_electrons[0].double() * 0.9, m.params.beta[0])
    hits = image_floors(F, prior_precision(prior, prior.n_terms), prior.n_terms, 1.0, seed=m.index)["bayes"]
    assert np.isfinite(fit) and hits < fit < 3 * hits, (fit, hits)
