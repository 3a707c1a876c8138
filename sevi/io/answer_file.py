"""Answer files: the course's ``Answer`` table and the tables written beside it (uncertainties,
shell widths, the regressor's own answer, the refinement's diagnostics); docs/formats.md."""

from __future__ import annotations

import numpy as np


def write_answer(path, p: dict, ids, attrs: dict, regressor: dict | None = None, diagnostics: dict | None = None,
                 centre: dict | None = None, uncertainty: str | None = None) -> None:
    """Write ``Answer`` (the course's table; ImageId first when ``ids`` is given), beside it
    ``AnswerUncertainty`` (the same layout and rows, holding 1-sigma uncertainties) and
    ``AnswerSigmaR`` (sigma_R and its 1-sigma), atomically. ``p``: ``predict_images``' output (or
    the refined answer, with ``regressor`` the first answer and ``diagnostics`` the fits').

    ``sevi fit`` (any number of shells) and ``sevi predict --centre fit`` add ``centre`` (x0, z0,
    x0_sd, z0_sd in the image file's pixel indices, one value or one per image; ``fitted``: 1 when
    the centre was fitted, 0 when given), written as the table ``AnswerCentre``. ``sevi fit`` also
    gives ``p["n_electrons"]`` / ``p["n_electrons_sd"]`` (detected electrons per shell), written as
    ``AnswerElectrons``; ``uncertainty`` replaces the file's description of
    the error bars."""
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
    if "n_electrons" in p:
        e = np.zeros(len(answer), np.dtype([("SphereId", "<u1"), ("n_electrons", "<f8"), ("n_electrons_sd", "<f8")]))
        e["SphereId"] = answer["SphereId"]
        e["n_electrons"], e["n_electrons_sd"] = p["n_electrons"].reshape(-1), p["n_electrons_sd"].reshape(-1)
        tables["AnswerElectrons"] = e
    if centre is not None:  # one row per image (ImageId first when there are several)
        rows = int(np.size(centre["x0"]))
        c = np.zeros(rows, np.dtype(([("ImageId", "<i4")] if ids is not None else []) + [
            ("x0", "<f8"), ("z0", "<f8"), ("x0_sd", "<f8"), ("z0_sd", "<f8"), ("fitted", "u1")]))
        if ids is not None:
            c["ImageId"] = ids
        for k in ("x0", "z0", "x0_sd", "z0_sd", "fitted"):
            c[k] = centre[k]
        tables["AnswerCentre"] = c
    io.write_tables(path, tables, attrs={**attrs, "uncertainty": uncertainty or how, "refined": regressor is not None})
