"""The frame-sum fit's answers, by name (``sevi.fit.frame_sum_fit``; no torch here, so a command's
options can name them without importing the fit).

* ``gls``: one generalised-least-squares step from the weighted fit's optimum, with the pixels' full
  covariance (a spot spreads over ~20 fit pixels: neighbours share noise); error bars ``(J C^-1 J^T + P)^-1``.
* ``wls``: the weighted least-squares optimum alone, with its sandwich (Godambe) error bars.

Which one ``sevi analyze`` answers by default, and why: docs/forward_model.md, "The frame sum's
covariance, checked".
"""

ESTIMATORS = ("gls", "wls")
DEFAULT_ESTIMATOR = "gls"  # sevi analyze's and sevi predict's answer for a frame sum
