"""Megatron indexed datasets: tokenization of JSONL/Parquet into ``.bin``/``.idx`` (``data tokenize``), merging,
inspection, stage blends from real token counts (``data mix``) and document-length histograms.

Nothing here imports :mod:`data_tools.synthesis` (``tests/data/test_layout.py`` checks it)."""
