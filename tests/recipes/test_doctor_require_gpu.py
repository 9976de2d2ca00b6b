"""``doctor --require-gpu``: exit 1 with one line naming the failed requirement; the decision is a pure function."""

from __future__ import annotations

import pytest

from megatron_agentic import doctor

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1, "capability": "9.0"}


def _gpu(cuda_build, devices):
    return {"torch": "2.13.0", "cuda_build": cuda_build, "cuda_available": bool(devices), "devices": devices}


@pytest.mark.parametrize(
    "gpu, env, expected",
    [
        (_gpu("12.8", [H100]), {}, None),
        (_gpu(None, []), {}, "CPU-only build"),
        (_gpu("12.8", []), {}, "sees no CUDA device: check the driver"),
        (_gpu("12.8", []), {"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES='' hides every device"),
        (_gpu("12.8", []), {"CUDA_VISIBLE_DEVICES": "3"}, "CUDA_VISIBLE_DEVICES='3'; check the driver"),
        (_gpu("12.8", [H100]), {"MEGATRON_AGENTIC_FORCE_CPU": "1"}, "MEGATRON_AGENTIC_FORCE_CPU=1 is set"),
    ],
)
def test_requirement_failure_names_the_cause(gpu, env, expected):
    reason = doctor.gpu_requirement_failure(gpu, env)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason and "\n" not in reason


def test_require_gpu_on_this_machine_says_why(capsys):
    report = doctor.gpu_report()
    reason = doctor.gpu_requirement_failure(report)
    code = doctor.main(["--require-gpu", "--json"])
    captured = capsys.readouterr()
    if reason is None:
        assert code == 0 and captured.err == ""
    else:
        assert code == 1
        assert captured.err.strip() == f"doctor: --require-gpu failed: {reason}"
        assert '"gpu"' in captured.out  # the JSON report still goes to stdout
