"""Offline synthesis (memory, FAS, HAS), training-text serialization and tokenization into indexed datasets."""
