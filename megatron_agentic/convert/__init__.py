"""HF <-> megatron-core checkpoint conversion for Qwen3-MoE (``megatron-agentic convert ...``).

``mapping`` holds the parameter mapping, ``hf_io`` the safetensors reader/writer, ``runtime`` the CPU
process groups; ``hf_to_mcore`` and ``mcore_to_hf`` are the two subcommands.
"""
