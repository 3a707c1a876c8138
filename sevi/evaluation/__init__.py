"""Shared pieces of the evaluation tools: held-out draws, the calibration of error bars, classical
baselines. Imports ``sevi.pipeline`` and below."""
