"""Shared utilities for the data tools: JSONL reading/writing with resume, sharding and common CLI arguments."""
