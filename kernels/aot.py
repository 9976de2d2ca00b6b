"""Ahead-of-time compilation of every GPU attention kernel configuration for H100 (sm_90), without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` lowers each kernel to PTX and a cubin with
the ``ptxas`` Triton bundles; ``cuobjdump -res-usage`` on the cubin reports registers and local memory (spills),
and the compile metadata reports shared memory. Run ``python -m kernels.aot`` for the markdown table kept in
``kernels/README.md``. Must run with the Triton interpreter off (``TRITON_INTERPRET`` unset or 0): the
interpreter replaces the kernels with Python functions that cannot be compiled.
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

H100_MAX_SHARED_BYTES = 227 * 1024  # per block, opt-in maximum on sm_90
H100_MAX_REGISTERS = 255
DTYPES = ("bf16", "fp16")


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

    @property
    def ok(self) -> bool:
        """No spills and shared memory within H100's limit."""
        return self.local_bytes == 0 and self.shared_bytes <= H100_MAX_SHARED_BYTES


def _signature(kernel: str, dtype: str) -> tuple[dict[str, str], list[str]]:
    """Argument types by name, and the names that get a divisibility-by-16 hint (as the JIT would at runtime)."""
    from kernels import flash_attention as fa

    fn = {"fwd": fa._attn_fwd_kernel, "bwd_dkdv": fa._attn_bwd_dkdv_kernel, "bwd_dq": fa._attn_bwd_dq_kernel}[kernel]
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
        elif name in ("num_heads", "num_kv_heads"):
            sig[name] = "i32"
        elif name in ("qk_scale", "sm_scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "constexpr"
    return sig, aligned


def compile_config(kernel: str, head_dim: int, dtype: str, causal: bool, group: int = 8) -> CompileReport:
    """Compile one configuration for sm_90 and measure its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    from kernels import flash_attention as fa

    if triton.knobs.runtime.interpret:
        raise RuntimeError("AOT compilation needs the Triton interpreter off (unset TRITON_INTERPRET)")
    fn = {"fwd": fa._attn_fwd_kernel, "bwd_dkdv": fa._attn_bwd_dkdv_kernel, "bwd_dq": fa._attn_bwd_dq_kernel}[kernel]
    cfg = fa.GPU_CONFIGS[(kernel, head_dim)]
    sig, aligned = _signature(kernel, dtype)
    constexprs = {
        "GROUP": group, "CAUSAL": causal, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "HEAD_DIM": head_dim,
        "PREC": "tf32",
    }  # fmt: skip
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", 90, 32)
    options = make_backend(target).parse_options({"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    compiled = triton.compile(src, target=target, options=options.__dict__)
    cubin = compiled.asm["cubin"]
    ptx = compiled.asm["ptx"]
    regs, local = _res_usage(cubin)
    return CompileReport(
        kernel=kernel, head_dim=head_dim, dtype=dtype, causal=causal, block_m=cfg.block_m, block_n=cfg.block_n,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, registers=regs, shared_bytes=int(compiled.metadata.shared),
        local_bytes=local, wgmma=len(re.findall(r"wgmma\.mma_async", ptx)),
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


def all_configs(dtypes: tuple[str, ...] = DTYPES) -> list[tuple[str, int, str, bool]]:
    """Every (kernel, head_dim, dtype, causal) the GPU path launches."""
    from kernels import flash_attention as fa

    return [(kern, hd, dt, causal) for (kern, hd) in fa.GPU_CONFIGS for dt in dtypes for causal in (True, False)]


def _compile_tuple(config: tuple[str, int, str, bool]) -> CompileReport:
    return compile_config(*config)


def markdown_table(reports: list[CompileReport]) -> str:
    """The resource table for ``kernels/README.md``."""
    rows = [
        "| kernel | head dim | dtype | causal | BM x BN | warps | stages | registers | shared KiB | local (spill) B "
        "| wgmma | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        rows.append(
            f"| {r.kernel} | {r.head_dim} | {r.dtype} | {'yes' if r.causal else 'no'} | {r.block_m} x {r.block_n} "
            f"| {r.num_warps} | {r.num_stages} | {r.registers} | {r.shared_bytes / 1024:.1f} | {r.local_bytes} "
            f"| {r.wgmma} | {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Compile every configuration and print the markdown table; exit 1 if any spills or overflows shared memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="restrict to these dtypes (repeatable)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="parallel compile processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("kernels.aot: unset TRITON_INTERPRET first (the interpreter cannot compile)", file=sys.stderr)
        return 2
    configs = all_configs(tuple(args.dtype or DTYPES))
    if args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            reports = list(pool.map(_compile_tuple, configs))
    else:
        reports = [compile_config(*c) for c in configs]
    print(markdown_table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
