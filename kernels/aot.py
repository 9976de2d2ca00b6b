"""Ahead-of-time compilation of every GPU attention kernel configuration for H100 (sm_90), without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` lowers each kernel to PTX and a cubin with
the ``ptxas`` Triton bundles; ``cuobjdump -res-usage`` on the cubin reports registers and local memory (spills),
the compile metadata reports shared memory, and :mod:`megatron_agentic.kernels.mma_check` reads the tensor-core work of every loop
body from the TTGIR (wgmma instructions per warpgroup, their N width, the minimum the tile sizes need, and the
redundancy ratio; the per-dot counts must add up to the PTX's ``wgmma.mma_async`` count). A configuration fails
on spills, shared memory over 227 KiB, a dot not lowered to wgmma, or redundant MMA. Every head dim the launchers
accept is compiled (16/32/64/128/256), with the configuration :func:`megatron_agentic.kernels.flash_attention.gpu_config` picks.
Run ``python -m megatron_agentic.kernels.aot`` for the markdown table kept in ``kernels/README.md``. Must run with the Triton
interpreter off (``TRITON_INTERPRET`` unset or 0): the interpreter replaces the kernels with Python functions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from megatron_agentic.kernels.compile_target import CompileTarget
from megatron_agentic.kernels.mma_check import analyse_ttgir

H100_MAX_SHARED_BYTES = 227 * 1024  # per block, opt-in maximum on sm_90
H100_MAX_REGISTERS = 255
H100_REGISTERS_PER_SM = 65536
DTYPES = ("bf16", "fp16")
DEFAULT_DTYPES = ("bf16",)  # fp16 lowers to the same layouts and instruction shapes; ``--dtype fp16`` adds it


@dataclass(frozen=True)
class CompileReport:
    """Resources of one compiled kernel configuration."""

    kernel: str
    """``fwd``, ``bwd_dkdv`` or ``bwd_dq``."""
    head_dim: int
    """Head dimension (a constexpr of the kernel)."""
    dtype: str
    """Input dtype (``bf16``/``fp16``)."""
    causal: bool
    """Causal (diagonal ring block, single-GPU training) or full (off-diagonal ring blocks)."""
    block_m: int
    """Query tile."""
    block_n: int
    """Key tile."""
    num_warps: int
    """Warps per program."""
    num_stages: int
    """Pipeline stages."""
    registers: int
    """Registers per thread (cuobjdump ``REG``)."""
    shared_bytes: int
    """Shared memory per program (compile metadata)."""
    local_bytes: int
    """Local memory per thread (cuobjdump ``LOCAL``); > 0 means register spills."""
    wgmma: int
    """``wgmma.mma_async`` instructions in the PTX (Hopper tensor cores)."""
    wgmma_loop: int
    """wgmma instructions per warpgroup in the heaviest loop body (TTGIR)."""
    wgmma_min: int
    """The minimum for that loop body derived from its tile sizes (at the chosen instruction widths)."""
    widths: str
    """Instruction N widths used in the loops (``n64``, ``n32+n64``, ...)."""
    redundancy: float
    """Worst issued / required MMA work over the loop bodies (1.0: no duplicated tensor-core work)."""
    non_wgmma: int
    """Dots not lowered to wgmma (Ampere mma or FMA)."""
    ttgir_wgmma: int
    """Per-warpgroup wgmma count summed over the TTGIR dots; must equal ``wgmma`` (model cross-check)."""
    races: str = "-"
    """Race check (:mod:`megatron_agentic.kernels.race_check`) of the buffers read and written; ``RACE`` fails."""

    @property
    def ctas_per_sm(self) -> int:
        """Resident programs per SM allowed by registers and shared memory."""
        by_regs = H100_REGISTERS_PER_SM // max(1, self.registers * self.num_warps * 32)
        by_smem = H100_MAX_SHARED_BYTES // max(1, self.shared_bytes)
        return min(by_regs, by_smem)

    @property
    def problems(self) -> list[str]:
        """Why this configuration is not acceptable on H100 (empty: it is)."""
        out = []
        if self.local_bytes:
            out.append("spills")
        if self.shared_bytes > H100_MAX_SHARED_BYTES:
            out.append("smem")
        if self.non_wgmma or not self.wgmma:
            out.append("no-wgmma")
        if self.redundancy > 1.0 + 1e-9:
            out.append("redundant-mma")
        if self.ttgir_wgmma != self.wgmma:
            out.append("ptx!=ttgir")
        if "RACE" in self.races:
            out.append("race")
        return out

    @property
    def ok(self) -> bool:
        """No spills, shared memory within H100's limit, every dot on wgmma, no redundant MMA."""
        return not self.problems


def _signature(kernel: str, dtype: str) -> tuple[dict[str, str], list[str]]:
    """Argument types by name, and the names that get a divisibility-by-16 hint (as the JIT would at runtime)."""
    from megatron_agentic.kernels import flash_attention_kernels as fk

    fn = fk.AOT_KERNELS[kernel][0]
    sig: dict[str, str] = {}
    aligned: list[str] = []
    fp32_ptrs = {"LSE", "DELTA", "DQ", "DK", "DV"}
    for name in fn.arg_names:
        if name in ("CU_Q", "CU_K"):
            sig[name] = "*i32"
            aligned.append(name)
        elif name in ("Q", "K", "V", "Out", "DO") or name in fp32_ptrs:
            sig[name] = "*fp32" if name in fp32_ptrs else f"*{dtype}"
            aligned.append(name)
        elif name.startswith("stride_"):
            sig[name] = "i32"
            if name != "stride_lh":  # heads*dim and dim strides are multiples of 16; the LSE stride is the length
                aligned.append(name)
        elif name in ("num_heads", "num_kv_heads", "num_head_progs", "tune_seqlen"):
            sig[name] = "i32"
        elif name in ("qk_scale", "sm_scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "constexpr"
    return sig, aligned


def compile_target(target: CompileTarget):
    """``triton.compile`` of one target for sm_90 (``.asm`` holds ``ttgir``, ``ptx``, ``cubin``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    if triton.knobs.runtime.interpret:
        raise RuntimeError("AOT compilation needs the Triton interpreter off (unset TRITON_INTERPRET)")
    fn = target.jit_function()
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in target.aligned}
    src = ASTSource(fn=fn, signature=dict(target.signature), constexprs=dict(target.constexprs), attrs=attrs)
    gpu = GPUTarget("cuda", 90, 32)
    options = make_backend(gpu).parse_options({"num_warps": target.num_warps, "num_stages": target.num_stages})
    return triton.compile(src, target=gpu, options=options.__dict__)


def race_check_target(target: CompileTarget) -> tuple[str, str, bool]:
    """Compile ``target`` and run the race check: ``(label, summary, ok)``."""
    from megatron_agentic.kernels.race_check import check_compiled

    compiled = compile_target(target)
    report = check_compiled(compiled.asm["ttgir"], compiled.asm["ptx"])
    return target.label, report.summary(), report.ok


def flash_target(kernel: str, head_dim: int, dtype: str, causal: bool, group: int = 8) -> CompileTarget:
    """The :data:`megatron_agentic.kernels.flash_attention.GPU_CONFIGS` configuration of one flash kernel."""
    from megatron_agentic.kernels import attention_config as ac
    from megatron_agentic.kernels import flash_attention_kernels as fk

    fn, extra = fk.AOT_KERNELS[kernel]
    cfg = ac.gpu_config(kernel, head_dim)
    sig, aligned = _signature(kernel, dtype)
    constexprs = {
        "GROUP": group, "CAUSAL": causal, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "HEAD_DIM": head_dim,
        "PREC": "tf32", **extra(group),
    }  # fmt: skip
    return CompileTarget(
        label=f"{kernel} d={head_dim} {dtype} {'causal' if causal else 'full'}", module=fn.fn.__module__,
        function=fn.fn.__name__, signature=tuple(sig.items()), constexprs=tuple(constexprs.items()),
        aligned=tuple(aligned), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip


def compile_config(kernel: str, head_dim: int, dtype: str, causal: bool, group: int = 8) -> CompileReport:
    """Compile one configuration for sm_90 and measure its resources (and run the race check on it)."""
    from megatron_agentic.kernels import attention_config as ac
    from megatron_agentic.kernels.race_check import check_compiled

    cfg = ac.gpu_config(kernel, head_dim)
    compiled = compile_target(flash_target(kernel, head_dim, dtype, causal, group))
    cubin = compiled.asm["cubin"]
    ptx = compiled.asm["ptx"]
    regs, local = _res_usage(cubin)
    mma = analyse_ttgir(compiled.asm["ttgir"], cfg.num_warps)
    races = check_compiled(compiled.asm["ttgir"], ptx).summary()
    return CompileReport(
        kernel=kernel, head_dim=head_dim, dtype=dtype, causal=causal, block_m=cfg.block_m, block_n=cfg.block_n,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, registers=regs, shared_bytes=int(compiled.metadata.shared),
        local_bytes=local, wgmma=len(re.findall(r"wgmma\.mma_async", ptx)), wgmma_loop=mma.per_loop,
        wgmma_min=mma.min_per_loop, widths=mma.widths, redundancy=mma.redundancy, non_wgmma=mma.non_wgmma_dots,
        ttgir_wgmma=mma.total_per_warpgroup, races=races,
    )  # fmt: skip


def _res_usage(cubin: bytes) -> tuple[int, int]:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(tool), "-res-usage", str(path)], check=True, capture_output=True, text=True).stdout
    reg = re.search(r"REG:(\d+)", text)
    local = re.search(r"LOCAL:(\d+)", text)
    if not reg or not local:
        raise RuntimeError(f"unexpected cuobjdump -res-usage output:\n{text}")
    return int(reg.group(1)), int(local.group(1))


def all_configs(dtypes: tuple[str, ...] = DEFAULT_DTYPES) -> list[tuple[str, int, str, bool]]:
    """Every (kernel, head_dim, dtype, causal) the GPU path can launch, fallback head dims included."""
    from megatron_agentic.kernels import attention_config as ac
    from megatron_agentic.kernels import flash_attention_kernels as fk

    return [
        (kern, hd, dt, causal)
        for kern in fk.AOT_KERNELS
        for hd in ac.SUPPORTED_HEAD_DIMS
        for dt in dtypes
        for causal in (True, False)
    ]


def _compile_tuple(config: tuple[str, int, str, bool]) -> CompileReport:
    return compile_config(*config)


def markdown_table(reports: list[CompileReport]) -> str:
    """The resource table for ``kernels/README.md``."""
    rows = [
        "| kernel | head dim | dtype | causal | BM x BN | warps | stages | registers | shared KiB | local (spill) B "
        "| CTAs/SM | wgmma | wgmma/loop | min/loop | N width | redundancy | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        rows.append(
            f"| {r.kernel} | {r.head_dim} | {r.dtype} | {'yes' if r.causal else 'no'} | {r.block_m} x {r.block_n} "
            f"| {r.num_warps} | {r.num_stages} | {r.registers} | {r.shared_bytes / 1024:.1f} | {r.local_bytes} "
            f"| {r.ctas_per_sm} | {r.wgmma} | {r.wgmma_loop} | {r.wgmma_min} | {r.widths} | {r.redundancy:.2f} "
            f"| {'yes' if r.ok else 'NO: ' + ', '.join(r.problems)} |"
        )
    return "\n".join(rows)


def race_table(rows: list[tuple[str, str, bool]]) -> str:
    """The race-check table: every compiled kernel configuration, its read-and-written buffers and their verdict."""
    out = ["| race check: kernel configuration | buffers read and written | ok |", "|---|---|---|"]
    out += [f"| {label} | {summary} | {'yes' if ok else 'NO'} |" for label, summary, ok in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Compile every configuration, print the resource table and the race table; exit 1 on any problem."""
    from megatron_agentic.kernels.race_check import module_targets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="restrict to these dtypes (repeatable)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="parallel compile processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(
            "megatron_agentic.kernels.aot: unset TRITON_INTERPRET first (the interpreter cannot compile)",
            file=sys.stderr,
        )
        return 2
    configs = all_configs(tuple(args.dtype or DEFAULT_DTYPES))
    others = module_targets()  # every other kernel of the table (the ring merge, ...): race check only
    if args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            reports = list(pool.map(_compile_tuple, configs))
            races = list(pool.map(race_check_target, others))
    else:
        reports = [compile_config(*c) for c in configs]
        races = [race_check_target(t) for t in others]
    print(markdown_table(reports))
    print()
    flash_rows = [
        (f"{r.kernel} d={r.head_dim} {r.dtype} {'causal' if r.causal else 'full'}", r.races, "RACE" not in r.races)
        for r in reports
    ]
    print(race_table(flash_rows + races))
    return 0 if all(r.ok for r in reports) and all(ok for _, _, ok in races) else 1


if __name__ == "__main__":
    sys.exit(main())
