"""Offline synthesis of agent-behaviour text: knowledge memory, FAS, offline rollouts, HAS, the LLM client and
prompt templates, the offline tool environment, training-text serialization and SFT datasets."""
