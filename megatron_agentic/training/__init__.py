"""Training system on megatron-core: data, builders, loop, checkpointing, metrics."""
