"""Model families trained by megatron-agentic (one folder per family)."""
