"""Leaf helpers shared by synthesis, indexed data and the trainer: JSONL input/output, output locks, argument
types. Nothing here imports the rest of the project."""
