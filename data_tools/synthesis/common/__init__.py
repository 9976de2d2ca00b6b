"""Pieces shared by the synthesis commands: LLM and failure-rate CLI arguments, progress display, settings
claims and input sharding."""
