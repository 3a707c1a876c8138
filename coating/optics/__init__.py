"""Thin-film optics and colour: the transfer-matrix reflectance, materials, the plant's stacks,
CIE colorimetry."""
