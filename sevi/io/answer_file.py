"""Answer files: the course's ``Answer`` table and the tables written beside it (uncertainties,
shell widths, the regressor's own answer, the refinement's diagnostics); docs/formats.md."""

from __future__ import annotations

import numpy as np


def write_answer(path, p: dict, ids, attrs: dict, regressor: dict | None = None, diagnostics: dict | None = None) -> None:
    """Write ``Answer`` (the course's table; ImageId first when ``ids`` is given), beside it
    ``AnswerUncertainty`` (the same layout and rows, holding 1-sigma uncertainties) and
    ``AnswerSigmaR`` (sigma_R and its 1-sigma), atomically. ``p``: ``predict_images``' output (or
    the refined answer, with ``regressor`` the first answer and ``diagnostics`` the fits')."""
    from sevi.io import tables as io

    answer = io.answer_rows(p["R"], p["beta"], ids)
    unc = answer.copy()
    unc["R"] = p["R_sd"].reshape(-1)
    unc["beta"] = p["beta_sd"].reshape(len(unc), -1)
    sig_fields = ([("ImageId", "<i4")] if ids is not None else []) + [("SphereId", "<u1"), ("sigma_R", "<f8"),
                                                                      ("sigma_R_sd", "<f8")]
    sig = np.zeros(len(answer), np.dtype(sig_fields))
    if ids is not None:
        sig["ImageId"] = answer["ImageId"]
    sig["SphereId"], sig["sigma_R"], sig["sigma_R_sd"] = answer["SphereId"], p["sigma_R"].reshape(-1), p["sigma_R_sd"].reshape(-1)
    tables = {"Answer": answer, "AnswerUncertainty": unc, "AnswerSigmaR": sig}
    how = "1-sigma, heteroscedastic Gaussian head, calibrated on validation"
    if regressor is not None:
        tables["AnswerRegressor"] = io.answer_rows(regressor["R"], regressor["beta"], ids)
        how = "1-sigma, curvature of the log-likelihood plus log-prior at the refined optimum"
    if diagnostics is not None:
        n = len(diagnostics["chi2_dof"])
        d = np.zeros(n, np.dtype(([("ImageId", "<i4")] if ids is not None else []) + [
            ("log_likelihood", "<f8"), ("log_posterior", "<f8"), ("chi2_dof", "<f8"), ("iterations", "<i4"),
            ("converged", "u1"), ("start", "S64")]))
        if ids is not None:
            d["ImageId"] = ids
        for k in ("log_likelihood", "log_posterior", "chi2_dof", "iterations", "converged"):
            d[k] = diagnostics[k]
        d["start"] = [s.encode() for s in diagnostics["start"]]
        tables["RefineDiagnostics"] = d
    io.write_tables(path, tables, attrs={**attrs, "uncertainty": how, "refined": regressor is not None})
