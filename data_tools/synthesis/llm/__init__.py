"""LLM access for synthesis: an async OpenAI-compatible client with cache, retries and structured outputs
(:mod:`~data_tools.synthesis.llm.client`), versioned prompt templates (:mod:`~data_tools.synthesis.llm.prompts`),
JSON-schema checks (:mod:`~data_tools.synthesis.llm.schema`) and a loopback fake server for tests and benchmarks.

Nothing is imported here: loading a prompt template does not load the HTTP client.
"""
