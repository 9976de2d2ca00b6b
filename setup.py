"""megatron-agentic: Agentic continual pre-training on megatron-core."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_pins(name: str) -> list[str]:
    """Requirement lines of ``requirements/NAME`` (the pinned versions shared with the Dockerfile)."""
    lines = (HERE / "requirements" / name).read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


INSTALL_REQUIRES = [
    # torch is pinned to the CPU wheel in the Makefile when no torch is present; any torch >= 2.6 works.
    "torch>=2.6",
    "numpy>=1.26",
    *read_pins("pins.txt"),
]

EXTRAS = {
    "triton": ["triton>=3.2"],
    "openai": ["openai>=1.50"],
    "dali": ["nvidia-dali-cuda120>=1.40"],
    "gpu": read_pins("gpu.txt"),
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
