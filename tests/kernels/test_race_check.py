"""The race check on compiled sm_90 code (``megatron_agentic.kernels.race_check``).

It must fail on the ring merge as it was (kept below as the negative example: it reads ``Lse`` in two layouts over
all warps and writes it from one warp with no barrier) and pass on today's; it must cover every launched kernel
(the kernel table is walked, a kernel missing from it fails here). The whole table is checked by
``python -m megatron_agentic.kernels.aot`` in ``test_aot_compile.py``. Compiling needs the Triton interpreter off,
so the compile runs in a subprocess without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from megatron_agentic.kernels import race_check

ROOT = Path(__file__).resolve().parents[2]

# kernels/ring_merge.py's kernel before the fix (commit f6149c7), verbatim: the in-place LSE store races.
OLD_RING_MERGE = """
import triton
import triton.language as tl


@triton.jit
def _ring_merge_kernel(
    Out, Lse, OutB, LseB, Rows, n_rows, stride_ot, stride_oh, stride_bt, stride_bh, stride_lh, stride_lbh,
    HAS_ROWS: tl.constexpr, BLOCK_T: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    h = tl.program_id(1)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    t_ok = offs_t < n_rows
    if HAS_ROWS:
        rows = tl.load(Rows + offs_t, mask=t_ok, other=0).to(tl.int64)
    else:
        rows = offs_t.to(tl.int64)
    lse = tl.load(Lse + h * stride_lh + rows, mask=t_ok, other=0.0)
    lse_b = tl.load(LseB + h * stride_lbh + offs_t, mask=t_ok, other=float("-inf"))
    diff = lse_b - lse
    w = 1.0 / (1.0 + tl.exp(-diff))  # sigmoid; 0 for lse_b = -inf
    new_lse = tl.maximum(lse, lse_b) + tl.log(1.0 + tl.exp(-tl.abs(diff)))
    new_lse = tl.where(lse_b == float("-inf"), lse, new_lse)
    o_ptrs = Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :]
    b_ptrs = OutB + offs_t[:, None].to(tl.int64) * stride_bt + h * stride_bh + offs_d[None, :]
    out = tl.load(o_ptrs, mask=t_ok[:, None], other=0.0)
    out_b = tl.load(b_ptrs, mask=t_ok[:, None], other=0.0).to(tl.float32)
    out = out - w[:, None] * (out - out_b)
    tl.store(o_ptrs, out, mask=t_ok[:, None])
    tl.store(Lse + h * stride_lh + rows, new_lse, mask=t_ok)
"""

_DRIVER = """
import dataclasses, json, sys
from megatron_agentic.kernels import aot, ring_merge
results = {}
for target in ring_merge.aot_targets():
    if "d=128" not in target.label and "d=256" not in target.label:
        continue
    for name, module in (("old", "old_ring_merge"), ("new", target.module)):
        label, summary, ok = aot.race_check_target(dataclasses.replace(target, module=module))
        results[f"{name} {label}"] = [summary, ok]
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.slow  # compiles for sm_90 in a subprocess (the interpreter must be off)
def test_race_check_fails_on_the_old_ring_merge_and_passes_on_the_fixed_one(tmp_path):
    (tmp_path / "old_ring_merge.py").write_text(OLD_RING_MERGE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(
        TRITON_DEFAULT_FP_FUSION="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS ") :])
    assert len(results) == 8  # d=128 and d=256, with and without a row index, old and new
    for label, (summary, ok) in results.items():
        if label.startswith("old"):
            assert not ok and "Lse: RACE: no barrier" in summary, (label, summary)
            assert "Out: owned" in summary, (label, summary)  # the in-place out update is thread-owned
        else:
            assert ok and "Lse: barrier" in summary and "Out: owned" in summary, (label, summary)


def test_every_launched_kernel_is_in_the_kernel_table():
    """Every ``@triton.jit`` kernel launched from Python (helpers called by other kernels excluded) is compiled by
    the AOT run and so race-checked; a new kernel without an ``aot_targets()`` entry fails here."""
    from megatron_agentic.kernels import flash_attention as fa

    table = {(fn.fn.__module__, fn.fn.__name__) for fn, _ in fa.AOT_KERNELS.values()}
    table |= {(t.module, t.function) for t in race_check.module_targets()}
    launched = {tuple(key.split(":")) for key in race_check.entry_kernels()}
    assert launched, "no kernels found"
    assert ("megatron_agentic.kernels.ring_merge", "_ring_merge_kernel") in launched
    assert ("megatron_agentic.kernels.flash_attention_kernels", "_attn_delta_kernel") in launched
    assert ("megatron_agentic.kernels.flash_attention_kernels", "_fwd_inner") not in launched  # a helper
    assert launched <= table, f"kernels missing from the AOT/race table: {sorted(launched - table)}"


# A hand-written compiled kernel: buffer A read and written through one non-replicated pointer tensor (owned),
# B read in a layout replicated over the 4 warps and written after a barrier, C the same without the barrier,
# D only updated with atomics.
_TTGIR = """#blocked = #ttg.blocked<{sizePerThread = [1, 1], threadsPerWarp = [1, 32], warpsPerCTA = [1, 4], order = [1, 0]}>
#blocked1 = #ttg.blocked<{sizePerThread = [1], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
#loc = loc("k.py":1:0)
#loc1 = loc("k.py":10:5)
#loc2 = loc("k.py":11:5)
#loc3 = loc("k.py":12:5)
#loc4 = loc("k.py":13:5)
#loc5 = loc("k.py":14:5)
#loc6 = loc("k.py":15:5)
#loc7 = loc("k.py":16:5)
#loc8 = loc("b"(#loc3))
module attributes {"ttg.num-warps" = 4 : i32} {
  tt.func public @k(%A: !tt.ptr<f32> loc("A"(#loc)), %B: !tt.ptr<f32> loc("B"(#loc)), %C: !tt.ptr<f32> loc("C"(#loc)), %D: !tt.ptr<f32> loc("D"(#loc))) {
    %pa = tt.splat %A : !tt.ptr<f32> -> tensor<32x128x!tt.ptr<f32>, #blocked> loc(#loc)
    %a = tt.load %pa : tensor<32x128x!tt.ptr<f32>, #blocked> loc(#loc1)
    tt.store %pa, %a : tensor<32x128x!tt.ptr<f32>, #blocked> loc(#loc2)
    %pb0 = tt.splat %B : !tt.ptr<f32> -> tensor<32x!tt.ptr<f32>, #blocked1> loc(#loc)
    %pb = tt.addptr %pb0, %off : tensor<32x!tt.ptr<f32>, #blocked1>, tensor<32xi32, #blocked1> loc(#loc)
    %b = tt.load %pb : tensor<32x!tt.ptr<f32>, #blocked1> loc(#loc8)
    tt.store %pb, %b : tensor<32x!tt.ptr<f32>, #blocked1> loc(#loc4)
    %pc = tt.splat %C : !tt.ptr<f32> -> tensor<32x!tt.ptr<f32>, #ttg.slice<{dim = 1, parent = #blocked}>> loc(#loc)
    %c = tt.load %pc : tensor<32x!tt.ptr<f32>, #ttg.slice<{dim = 1, parent = #blocked}>> loc(#loc5)
    tt.store %pc, %c : tensor<32x!tt.ptr<f32>, #ttg.slice<{dim = 1, parent = #blocked}>> loc(#loc6)
    %pd = tt.splat %D : !tt.ptr<f32> -> tensor<32x!tt.ptr<f32>, #blocked1> loc(#loc)
    %d = tt.atomic_rmw fadd, relaxed, gpu, %pd, %c : (tensor<32x!tt.ptr<f32>, #blocked1>, tensor<32xf32, #blocked1>) -> tensor<32xf32, #blocked1> loc(#loc7)
    tt.return loc(#loc)
  } loc(#loc)
} loc(#loc)
"""
_PTX = """
\t.loc\t1 10 5
\tld.global.b32 {%r1}, [%rd1];
\t.loc\t1 11 5
\tst.global.b32 [%rd1], {%r1};
\t.loc\t1 12 5
\t@%p1 ld.global.b32 {%r2}, [%rd2];
\t.loc\t1 13 5
\tbar.sync 0;
\t@%p2 st.global.b32 [%rd2], {%r2};
\t.loc\t1 14 5
\tld.global.b32 {%r3}, [%rd3];
\t.loc\t1 15 5
\t@%p3 st.global.b32 [%rd3], {%r3};
\t.loc\t1 16 5
\tatom.global.add.f32 %r4, [%rd4], %r3;
\t.file\t1 "k.py"
"""


def test_race_check_rules_on_a_hand_written_kernel():
    report = race_check.check_compiled(_TTGIR, _PTX)
    verdicts = {b.buffer: b.verdict for b in report.buffers}
    assert verdicts["A"] == "owned"
    assert verdicts["B"] == "barrier"
    assert verdicts["C"].startswith("RACE: no barrier")
    assert "D" not in verdicts  # atomics only
    assert not report.ok
    # without the barrier B races too (its layout gives each of the 32 rows to all 4 warps)
    assert race_check.check_compiled(_TTGIR, _PTX.replace("\tbar.sync 0;\n", "")).summary().count("RACE") == 2


def test_warp_replication_of_layouts():
    aliases = {
        "#b": "#ttg.blocked<{sizePerThread = [1, 4], threadsPerWarp = [8, 4], warpsPerCTA = [4, 1], order = [1, 0]}>"
    }
    assert not race_check.warp_replicated("#b", (64, 16), aliases)  # 32 rows per layout tile: repeats, no overlap
    assert race_check.warp_replicated("#b", (16, 16), aliases)  # 16 rows < 32: warps 2 and 3 repeat warps 0 and 1
    assert race_check.warp_replicated("#ttg.slice<{dim = 0, parent = #b}>", (16,), aliases)  # sliced over warps
    assert not race_check.warp_replicated("#ttg.slice<{dim = 1, parent = #b}>", (64,), aliases)
    assert race_check.warp_replicated("#ttg.nvidia_mma<{versionMajor = 3}>", (64, 64), aliases)  # unknown: assume so
