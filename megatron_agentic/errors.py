"""The configuration error type (a leaf module: config, perf, recipes and planning raise it without importing each
other's modules)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the file and field."""
