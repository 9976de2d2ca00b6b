"""LLM access for synthesis: an async OpenAI-compatible client with cache, retries and structured outputs,
versioned prompt templates, and a loopback fake server for tests and benchmarks."""

from data_tools.synthesis.llm.client import LLMClient, LLMConfig, LLMResult, LLMStats

__all__ = ["LLMClient", "LLMConfig", "LLMResult", "LLMStats"]
