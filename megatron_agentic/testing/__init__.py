"""Test support that ships with the package: :mod:`megatron_agentic.testing.faults` (the test-fault switches)."""
