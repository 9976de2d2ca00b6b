"""Tensor-core work per loop body, read from Triton's TTGIR: catches MMA that is computed redundantly.

Every ``ttng.warp_group_dot`` (Hopper ``wgmma``) in the TTGIR carries its accumulator type ``tensor<MxNxf32, #mma>``
and its A operand ``<MxK...>``; the ``#mma`` layout says how warps tile it (``warpsPerCTA = [wm, wn]``) and the
instruction shape (``instrShape = [16, n, k]``). A warpgroup (4 warps along M) covers 64 rows per instruction, so
one warpgroup issues ``ceil(M / (16 wm)) * ceil(N / (n wn)) * K / k`` instructions for the dot, and the CTA issues
that times ``num_warps / 4`` warpgroups. When the warps cover more rows than the tile has (``16 wm > M``, e.g.
``warpsPerCTA = [8, 1]`` on a 64-row tile) or more columns (``n wn > N``), several warpgroups compute the *same*
MMA: the issued work exceeds the tile's ``M N K``. :func:`analyse_ttgir` reports, per innermost ``scf.for`` (the
loop over K/V or Q tiles), the wgmma instructions each warpgroup issues, their N widths, the minimum the tile sizes
require, and the redundancy ratio (issued / required; 1.0 is ideal). The per-warpgroup counts summed over all dots
equal the ``wgmma.mma_async`` count in the PTX, which :mod:`megatron_agentic.kernels.aot` cross-checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_MMA_LAYOUT = re.compile(
    r"^(#mma\d*) = #ttg\.nvidia_mma<\{versionMajor = (\d+), .*warpsPerCTA = \[(\d+), (\d+)\].*"
    r"instrShape = \[(\d+), (\d+)(?:, (\d+))?\]"
)
_DOT_RESULT = re.compile(r"-> tensor<(\d+)x(\d+)xf32, (#mma\d*)>")
_DOT_OPERAND_A = re.compile(r" : (?:!ttg\.memdesc|tensor)<(\d+)x(\d+)x")


@dataclass(frozen=True)
class DotMma:
    """One ``warp_group_dot`` (or ``tt.dot``) of the TTGIR and the MMA work it issues."""

    m: int
    """Accumulator rows."""
    n: int
    """Accumulator columns."""
    k: int
    """Reduction length."""
    wgmma: bool
    """Lowered to Hopper ``wgmma`` (MMA layout version 3)."""
    instr_n: int
    """N width of each instruction (``wgmma.m64nXk16``)."""
    instr_k: int
    """K depth of each instruction (16 for bf16/fp16)."""
    per_warpgroup: int
    """Instructions one warpgroup issues for this dot."""
    issued: int
    """Multiply-accumulates the whole CTA issues (all warpgroups, including duplicates)."""

    @property
    def required(self) -> int:
        """Multiply-accumulates of the tile itself (``M N K``)."""
        return self.m * self.n * self.k


@dataclass
class LoopMma:
    """The dots of one innermost loop body (or of the code outside loops)."""

    line: int
    """TTGIR line of the ``scf.for`` (0: outside any loop)."""
    dots: list[DotMma] = field(default_factory=list)

    @property
    def per_warpgroup(self) -> int:
        """wgmma instructions per warpgroup and iteration."""
        return sum(d.per_warpgroup for d in self.dots if d.wgmma)

    @property
    def redundancy(self) -> float:
        """Issued / required multiply-accumulates (1.0: no duplicated MMA)."""
        required = sum(d.required for d in self.dots)
        return sum(d.issued for d in self.dots) / required if required else 1.0

    def minimum(self, warpgroups: int) -> int:
        """Fewest wgmma instructions per warpgroup the tile sizes allow at the chosen instruction widths."""
        return sum(math.ceil(d.required / (warpgroups * 64 * d.instr_n * d.instr_k)) for d in self.dots if d.wgmma)


@dataclass(frozen=True)
class MmaSummary:
    """MMA facts of one compiled kernel."""

    loops: tuple[LoopMma, ...]
    """Innermost loops with at least one dot, in program order."""
    warpgroups: int
    """``num_warps / 4``."""
    total_per_warpgroup: int
    """Sum of per-warpgroup wgmma instructions over all dots (equals the PTX ``wgmma.mma_async`` count)."""
    non_wgmma_dots: int
    """Dots not lowered to wgmma (mma v2 or FMA): slow on H100."""

    @property
    def widths(self) -> str:
        """Distinct instruction N widths, e.g. ``n64`` or ``n32+n64``."""
        ns = sorted({d.instr_n for loop in self.loops for d in loop.dots if d.wgmma})
        return "+".join(f"n{n}" for n in ns) or "-"

    @property
    def per_loop(self) -> int:
        """Per-warpgroup wgmma instructions of the heaviest loop body."""
        return max((loop.per_warpgroup for loop in self.loops), default=0)

    @property
    def min_per_loop(self) -> int:
        """Minimum for that heaviest loop body, derived from its tile sizes."""
        heaviest = max(self.loops, key=lambda loop: loop.per_warpgroup, default=None)
        return heaviest.minimum(self.warpgroups) if heaviest else 0

    @property
    def redundancy(self) -> float:
        """Worst issued / required ratio over the loop bodies."""
        return max((loop.redundancy for loop in self.loops), default=1.0)


def analyse_ttgir(ttgir: str, num_warps: int) -> MmaSummary:
    """Parse ``compiled.asm["ttgir"]`` of a kernel compiled with ``num_warps`` warps."""
    layouts: dict[str, tuple[int, int, int, int, int]] = {}
    for line in ttgir.splitlines():
        if match := _MMA_LAYOUT.match(line):
            name, version, wm, wn, _im, inn, ik = match.groups()
            layouts[name] = (int(version), int(wm), int(wn), int(inn), int(ik or 16))
    warpgroups = max(1, num_warps // 4)
    stack: list[int] = []  # for each open brace: the scf.for line it belongs to, or -1
    loops: dict[int, LoopMma] = {}
    non_wgmma = 0
    total = 0
    for lineno, line in enumerate(ttgir.splitlines(), 1):
        if "warp_group_dot " in line or " tt.dot " in line:
            dot = _parse_dot(line, layouts, warpgroups)
            if dot is not None:
                loop = next((owner for owner in reversed(stack) if owner >= 0), 0)
                loops.setdefault(loop, LoopMma(loop)).dots.append(dot)
                total += dot.per_warpgroup if dot.wgmma else 0
                non_wgmma += 0 if dot.wgmma else 1
        net = line.count("{") - line.count("}")
        for _ in range(max(net, 0)):
            stack.append(lineno if "scf.for" in line else -1)
        for _ in range(max(-net, 0)):
            if stack:
                stack.pop()
    inner = tuple(loops[key] for key in sorted(loops) if key > 0) or tuple(loops.values())
    return MmaSummary(loops=inner, warpgroups=warpgroups, total_per_warpgroup=total, non_wgmma_dots=non_wgmma)


def _parse_dot(line: str, layouts: dict[str, tuple[int, int, int, int, int]], warpgroups: int) -> DotMma | None:
    result = _DOT_RESULT.search(line)
    operand = _DOT_OPERAND_A.search(line)
    if result is None or operand is None:
        # a tt.dot left on a blocked (FMA) layout
        shape = re.search(r"-> tensor<(\d+)x(\d+)xf32", line)
        if shape is None or operand is None:
            return None
        m, n, k = int(shape.group(1)), int(shape.group(2)), int(operand.group(2))
        return DotMma(m, n, k, False, 0, 0, 0, m * n * k)
    m, n, name = int(result.group(1)), int(result.group(2)), result.group(3)
    k = int(operand.group(2))
    version, wm, wn, instr_n, instr_k = layouts[name]
    if version != 3:
        return DotMma(m, n, k, False, instr_n, instr_k, 0, m * n * k)
    per_wg = math.ceil(m / (16 * wm)) * math.ceil(n / (instr_n * wn)) * math.ceil(k / instr_k)
    return DotMma(m, n, k, True, instr_n, instr_k, per_wg, warpgroups * per_wg * 64 * instr_n * instr_k)
