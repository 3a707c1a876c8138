"""From an image, or camera frames, to an answer: the regressor's start refined by the likelihood
fit, with diagnostics. Imports ``sevi.regressor``, ``sevi.fit`` and below."""
