"""The per-cycle models and their fitting: MLPs, the grey box, normalisation, hyperparameters,
the training loop, the registry on disk, sweep inputs and pretraining spectra."""
