"""Triton kernels (flash attention with LSE, zigzag ring context-parallel attention), each with a torch reference."""
