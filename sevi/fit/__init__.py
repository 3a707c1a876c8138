"""Likelihood fits of an image under its exact forward model: count images (``count_fit``),
direct images (``direct_fit``) and the driver over many images (``fit_images``). Imports
``sevi.camera`` and below."""
