"""The conversion error type, shared by the converters and the model packages' HF mappings (a leaf module)."""

from __future__ import annotations


class ConversionError(ValueError):
    """An unsupported or inconsistent checkpoint."""
