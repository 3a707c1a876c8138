"""The frame-sum fit's answers, by name (``sevi.fit.frame_sum_fit``; no torch here, so a command's
options can name them without importing the fit).

* ``gls``: one generalised-least-squares step from the weighted fit's optimum, with the pixels' full
  covariance (a spot spreads over ~20 fit pixels: neighbours share noise); error bars ``(J C^-1 J^T + P)^-1``.
* ``wls``: the weighted least-squares optimum alone, with its sandwich (Godambe) error bars.

Either answer's error bars can instead come from the spread of batches of the measurement's frames
(``sevi.fit.batch_spread``), which needs no model of the pixels' covariance.

Which one ``sevi analyze`` answers by default, and why: docs/forward_model.md, "The frame sum's
covariance, checked".
"""

ESTIMATORS = ("gls", "wls")
DEFAULT_ESTIMATOR = "gls"  # sevi analyze's and sevi predict's answer for a frame sum

# The direct path's error bars from the measurement's own spread: the frames summed in this many
# contiguous batches (``sevi.fit.batch_spread``; sevi analyze --batches, 0 for the model's bars).
DEFAULT_BATCHES = 100
