"""HF <-> megatron-core checkpoint conversion for Qwen3-MoE (``megatron-agentic convert ...``).

The HF <-> megatron-core parameter mapping is the model package's (``models/qwen3_moe/hf_mapping.py``), ``errors``
the shared error type, ``keys`` the checkpoint's (TE-layout) sharded keys, ``hf_io`` the
safetensors reader/writer, ``dcp_stream`` the streaming ``torch_dist`` writer, ``synthetic`` random HF checkpoints
for benchmarks, ``runtime`` the CPU process groups; ``hf_to_mcore`` and ``mcore_to_hf`` are the two subcommands.
Neither builds a model: both stream tensor by tensor (layer by layer), so memory does not grow with the model.
"""
