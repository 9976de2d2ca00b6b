"""Data tools: offline synthesis (:mod:`data_tools.synthesis`: memory, FAS, HAS, training-text serialization) and
Megatron indexed datasets (:mod:`data_tools.indexed`: tokenization, merge, inspect, blends), over shared leaf
helpers (:mod:`data_tools.common`)."""
