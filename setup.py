"""megatron-agentic: Agentic continual pre-training on megatron-core."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

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
    # kernels: Hugging Face's distribution (transformers imports it); tests/ops/test_import_clash.py imports both.
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.6",
        "ruff>=0.8",
        "transformers>=4.51",
        "kernels>=0.10",
        "triton>=3.2",
    ],
}

# Prompt/schema folders (data_tools/synthesis/templates/<family>/<version>/) hold data files only; declaring them as
# packages (rather than as data of data_tools) is what setuptools asks for folders with importable names.
TEMPLATE_PACKAGES = sorted(
    ".".join(path.relative_to(HERE).parts)
    for path in (HERE / "data_tools" / "synthesis" / "templates").rglob("*")
    if path.is_dir() and path.name != "__pycache__"
)
TEMPLATE_PACKAGES = ["data_tools.synthesis.templates", *TEMPLATE_PACKAGES]


class BuildPyWithKernels(build_py):
    """Install the top-level ``kernels/`` folder as ``megatron_agentic.kernels``.

    A top-level package named ``kernels`` would shadow Hugging Face's ``kernels`` distribution (which ``transformers``
    imports), so the folder has no ``__init__.py`` and its import name lives in the project's namespace. Editable
    installs and source checkouts bind it at import time (``megatron_agentic/__init__.py``); wheels get a copy here.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "megatron_agentic" / "kernels"
        self.mkpath(str(target))
        for source in sorted((HERE / "kernels").iterdir()):
            if source.suffix in (".py", ".md"):
                self.copy_file(str(source), str(target / source.name))


setup(
    name="megatron-agentic",
    version="0.1.0",
    description="Megatron-Core based continual pre-training for agentic LLMs (AgentFounder recipe).",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[*find_packages(include=["megatron_agentic*", "data_tools*"]), *TEMPLATE_PACKAGES],
    package_data={**{name: ["*"] for name in TEMPLATE_PACKAGES}, "megatron_agentic": ["recipes/*.yaml"]},
    # An explicit root makes editable installs a plain .pth entry (no import-hook finder, no setuptools warning).
    package_dir={"": "."},
    cmdclass={"build_py": BuildPyWithKernels},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["megatron-agentic=megatron_agentic.cli:main"]},
)
