"""Model families trained by megatron-agentic: one folder per family, listed in ``models/registry.py``.

``models/family.py`` is the typed interface a family exports (``FAMILY``); see ``docs/training.md`` ("Adding a
model").
"""
