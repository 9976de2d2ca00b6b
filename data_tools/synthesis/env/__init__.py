"""Offline tool environment: ``search`` and ``visit`` over a local corpus (BM25), DeepResearch result shapes."""

from data_tools.synthesis.env.search import (
    TOOL_NAMES,
    Document,
    EnvConfig,
    Hit,
    SearchEnvironment,
    load_corpus,
    load_documents,
    load_environment,
    memory_documents,
)

__all__ = [
    "TOOL_NAMES",
    "Document",
    "EnvConfig",
    "Hit",
    "SearchEnvironment",
    "load_corpus",
    "load_documents",
    "load_environment",
    "memory_documents",
]
