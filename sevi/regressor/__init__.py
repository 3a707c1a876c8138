"""The ResNet regressor: the model, its input features, the training config and presets, training
batches, the loop, validation, checkpoints and inference. Imports ``sevi.camera`` and below."""
