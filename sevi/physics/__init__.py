"""The ideal detector image and its statistics: Legendre angular densities, the prior and its
narrowing, the inverse-transform generator, the exact expected image, the Poisson renderer,
the information limit and the course's Distance. Imports ``sevi.runtime`` and ``sevi.io`` only."""
