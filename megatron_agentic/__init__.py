"""megatron-agentic: Megatron-Core based continual pre-training for agentic LLMs."""

__version__ = "0.1.0"
