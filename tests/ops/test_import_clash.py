"""The project imports beside Hugging Face's ``kernels`` distribution (which ``transformers`` imports), in every way it
is used: from the repository root (``python -m``, pytest, torchrun workers), from a script in ``benchmarks/``, and as
an installed wheel. The clash this guards against: a top-level package named ``kernels`` made
``from kernels import ...`` in ``transformers.integrations.hub_kernels`` load this project's folder instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: Hugging Face's kernels and transformers' hub-kernels path, then ours.
PROBE = """
import importlib, sys
import kernels
assert hasattr(kernels, "get_kernel"), ("not Hugging Face's kernels", kernels.__file__)
from transformers.utils import is_kernels_available
assert is_kernels_available()
from transformers.integrations import hub_kernels  # runs `from kernels import ...` (the clash's failure point)
assert hub_kernels.get_kernel_hub is kernels.get_kernel
import megatron_agentic.kernels.flash_attention as fa
import megatron_agentic.kernels.ring_attention as ring
assert callable(fa.flash_attn_func) and callable(ring.ring_attn_func)
print("HF", kernels.__file__)
print("OURS", fa.__file__)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(extra)
    return env


def _probe(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("HF ", "OURS ")))


def test_hugging_face_kernels_is_installed():
    """The clash check below must run against the real distribution, not skip without it (the test extra has it)."""
    assert metadata.version("kernels")
    assert "kernels" in {Path(f).parts[0] for f in metadata.files("kernels") or []}


def test_no_top_level_kernels_package_in_the_checkout():
    """``kernels/`` stays a folder without ``__init__.py``: a regular package there would win over Hugging Face's."""
    assert (ROOT / "kernels" / "flash_attention.py").is_file()
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert not (ROOT / "megatron_agentic" / "kernels").exists()


@pytest.mark.slow
def test_both_import_from_the_repository_root():
    """``python -c`` from the repository root (what pytest, the CLI and torchrun workers do)."""
    found = _probe([sys.executable, "-c", PROBE], ROOT, _env())
    assert Path(found["HF"]).parent.name == "kernels" and not Path(found["HF"]).is_relative_to(ROOT / "kernels")
    assert Path(found["OURS"]) == ROOT / "kernels" / "flash_attention.py"


@pytest.mark.slow
def test_both_import_in_a_torchrun_worker_and_a_benchmark_script(tmp_path):
    """A torchrun worker started from the repository root, and a script run by path from ``benchmarks/``."""
    script = tmp_path / "worker.py"
    script.write_text(PROBE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--standalone", str(script)]
    found = _probe(cmd, ROOT, _env(OMP_NUM_THREADS="1"))
    # a script run by path has its own folder first on sys.path: the project comes from the installed (editable)
    # checkout, which is this one in a normal venv (another one when tests run from a second worktree)
    ours = Path(found["OURS"])
    assert ours.name == "flash_attention.py" and ours.parent.name == "kernels"
    assert (ours.parents[1] / "megatron_agentic" / "__init__.py").is_file()
    bench = ROOT / "benchmarks" / "_import_probe_tmp.py"
    bench.write_text(PROBE)
    try:
        found = _probe([sys.executable, str(bench)], tmp_path, _env())
    finally:
        bench.unlink()
    assert Path(found["OURS"]).name == "flash_attention.py"


@pytest.mark.slow
def test_both_import_from_an_installed_wheel(tmp_path):
    """A wheel built from the checkout carries ``megatron_agentic/kernels/*.py`` and no top-level ``kernels``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("megatron_agentic-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "megatron_agentic/kernels/flash_attention.py" in names
    assert not [n for n in names if n.startswith("kernels/")]
    assert any(n.startswith("data_tools/synthesis/templates/fas/v1/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The wheel's copy must be used: run outside the checkout, with the wheel's directory first on the path.
    found = _probe([sys.executable, "-c", PROBE], tmp_path, _env(PYTHONPATH=str(site)))
    assert Path(found["OURS"]) == site / "megatron_agentic" / "kernels" / "flash_attention.py"
