"""Every GPU kernel configuration compiles for H100 (sm_90) on this CPU machine: all dots on wgmma, no redundant
MMA, no spills, shared memory within 227 KiB, no cross-warp race on a buffer read and written (the race check over
the whole kernel table: the attention kernels plus every module's ``aot_targets()``); plus the TTGIR MMA model on
hand-written layouts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_agentic.kernels.mma_check import analyse_ttgir

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ("fwd", "bwd_dkdv", "bwd_fused", "bwd_dq")
HEAD_DIMS = (16, 32, 64, 128, 256)


@pytest.mark.slow
def test_all_gpu_configs_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "megatron_agentic.kernels.aot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    resources = proc.stdout.split("| race check:", 1)[0]  # the resource table; the race table follows
    rows = [line for line in resources.splitlines() if line.startswith("| fwd") or line.startswith("| bwd")]
    # 4 kernels x 5 head dims (fallbacks included) x causal/full, bf16
    assert len(rows) == len(KERNELS) * len(HEAD_DIMS) * 2, proc.stdout + proc.stderr
    seen = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        seen.add((cells[0], int(cells[1])))
        registers, shared_kib, local = int(cells[7]), float(cells[8]), int(cells[9])
        wgmma, per_loop, minimum, redundancy, ok = int(cells[11]), int(cells[12]), int(cells[13]), cells[15], cells[16]
        assert local == 0, f"register spills: {row}"
        assert shared_kib <= 227, f"shared memory over H100's 227 KiB: {row}"
        assert 0 < registers <= 255, row
        assert wgmma > 0, f"no Hopper wgmma instructions: {row}"
        assert per_loop == minimum and redundancy == "1.00", f"redundant tensor-core work: {row}"
        assert ok == "yes", row
    assert seen == {(k, d) for k in KERNELS for d in HEAD_DIMS}
    _assert_race_table(proc.stdout, len(rows))
    assert proc.returncode == 0, proc.stderr
    _assert_readme_table_current(rows)


def _assert_race_table(stdout: str, flash_rows: int) -> None:
    """The race check covered every compiled configuration of the kernel table and found no hazard."""
    from megatron_agentic.kernels.race_check import module_targets

    table = stdout.split("| race check: kernel configuration |", 1)[1]
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    assert len(rows) == flash_rows + len(module_targets()), table
    names = {row.split("|")[1].split()[0] for row in rows}
    assert {"ring_merge", "delta", *KERNELS} <= names, names
    for row in rows:
        assert row.rstrip().endswith("| yes |") and "RACE" not in row, f"race check: {row}"
    merge = [row for row in rows if row.startswith("| ring_merge")]
    assert merge and all("Lse: barrier" in row and "Out: owned" in row for row in merge), merge


def _assert_readme_table_current(rows: list[str]) -> None:
    """kernels/README.md records this table for the Triton version it names; keep it in sync."""
    import triton

    readme = (ROOT / "kernels" / "README.md").read_text()
    if f"(triton {triton.__version__}," not in readme:
        return  # another Triton version compiles differently; the README documents the pinned one
    section = readme.split("## Compiled resources on H100 (sm_90)")[1].split("\n## ")[0]
    current = section.split("| kernel |", 1)[1].split("\n\n", 1)[0]  # the first table (a "before" table follows)
    recorded = [line for line in current.splitlines() if line.startswith("| fwd") or line.startswith("| bwd")]
    assert recorded == rows, (
        "kernels/README.md resource table is stale: regenerate it with `python -m megatron_agentic.kernels.aot`"
    )


# Shaped like Triton 3.9's TTGIR for the pre-rework d=128 dK/dV kernel: a 64x64 score tile on an 8-warp [8, 1]
# layout (both warpgroups compute it) and a 64x128 accumulator on [4, 2] (the warpgroups split N).
_TTGIR = """#mma = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [8, 1], instrShape = [16, 32, 16]}>
#mma1 = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [4, 2], instrShape = [16, 64, 16]}>
module {
  tt.func public @k() {
    %r:2 = scf.for %i = %c0 to %n step %c64 iter_args(%a = %z, %b = %z) -> (tensor<64x128xf32, #mma1>) : i32 {
      %s = ttng.warp_group_dot %k, %q, %c {isAsync = true} : !ttg.memdesc<64x128xbf16, #shared, #smem> * !ttg.memdesc<128x64xbf16, #shared2, #smem, mutable> -> tensor<64x64xf32, #mma> loc(#l)
      %dv = ttng.warp_group_dot %p, %do, %b {isAsync = true} : tensor<64x64xbf16, #ttg.dot_op<{opIdx = 0, parent = #mma1, kWidth = 2}>> * !ttg.memdesc<64x128xbf16, #shared, #smem, mutable> -> tensor<64x128xf32, #mma1> loc(#l)
      scf.yield %a, %dv : tensor<64x128xf32, #mma1>, tensor<64x128xf32, #mma1> loc(#l)
    } loc(#l)
    %o = ttng.warp_group_dot %x, %y, %c {isAsync = true} : !ttg.memdesc<64x16xbf16, #shared, #smem> * !ttg.memdesc<16x64xbf16, #shared2, #smem> -> tensor<64x64xf32, #mma1> loc(#l)
    tt.return
  }
}
"""


def test_mma_model_detects_duplicated_warpgroups():
    summary = analyse_ttgir(_TTGIR, num_warps=8)
    assert len(summary.loops) == 1  # the dot after the loop is not part of a loop body
    (loop,) = summary.loops
    score, dv = loop.dots
    # score: 64x64x128 on [8, 1] n32: each of the 2 warpgroups issues 1 (M) x 2 (N) x 8 (K) = 16 instructions
    assert (score.per_warpgroup, score.instr_n, score.issued, score.required) == (
        16,
        32,
        2 * 16 * 64 * 32 * 16,
        64**3 * 2,
    )
    # dv: 64x128x64 on [4, 2] n64: 1 x 1 x 4 per warpgroup, the two warpgroups own different columns
    assert (dv.per_warpgroup, dv.issued, dv.required) == (4, 2 * 4 * 64 * 64 * 16, 64 * 128 * 64)
    assert loop.per_warpgroup == 20 and loop.minimum(2) == 12
    assert summary.redundancy == (2 * 64**3 * 2 + 64 * 128 * 64) / (64**3 * 2 + 64 * 128 * 64)
    assert summary.widths == "n32+n64" and summary.non_wgmma_dots == 0
    assert summary.total_per_warpgroup == 16 + 4 + 1  # the PTX-count cross-check includes the dot outside loops
    # the same tile on 4 warps (one warpgroup) is not redundant
    assert analyse_ttgir(_TTGIR.replace("[8, 1]", "[4, 1]").replace("[4, 2]", "[4, 1]"), num_warps=4).redundancy == 1.0


def test_mma_model_flags_dots_not_on_wgmma():
    ampere = _TTGIR.replace("versionMajor = 3", "versionMajor = 2", 1).replace("[16, 32, 16]", "[16, 8]")
    assert analyse_ttgir(ampere, num_warps=8).non_wgmma_dots == 1
