"""The torch device a command runs on: ``auto`` picks CUDA where torch sees a GPU, else the CPU."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> cuda when available, else cpu; anything else is taken as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:  # torch's message lists twenty device types; name the option instead
        raise ValueError(f"--device {device}: not a torch device; expected auto, cpu or cuda[:k]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device auto or cpu")
    return device
