"""Race check on compiled sm_90 code: buffers a kernel both reads and writes, and what orders those accesses.

The Triton interpreter runs a program's lanes as one numpy operation, so a kernel that reads a buffer in one
layout (spread over several warps) and writes it in another (done by some other warp) gives the right answer on
CPU and a rare, silent wrong one on a GPU. This check reads what the compiler produced for H100:

1. **TTGIR**: every global access (``tt.load``, ``ttg.async_copy_global_to_local``, ``tt.store``,
   ``tt.atomic_rmw``/``tt.atomic_cas``), the kernel argument its pointer derives from (through ``tt.splat``,
   ``tt.addptr``, ``tt.broadcast``, loop arguments, ...), the layout of that pointer tensor and the source location.
2. A buffer that is only read, only written, or only updated with atomics is safe. A buffer that is read and
   written is safe without a barrier only when every access uses the *same* pointer tensor in a layout that gives
   each element to exactly one warp (each thread reads and writes its own elements: a read-modify-write in place).
3. Otherwise the **PTX** must show a CTA barrier (``bar.sync``/``barrier.sync``) after the last global read and
   before the first global write of that buffer (matched to the TTGIR accesses by their ``.loc`` line and column),
   or the kernel has to write a distinct output.

:func:`check_compiled` applies this to one compiled kernel; :mod:`megatron_agentic.kernels.aot` runs it on every
configuration of the kernel table (``flash_attention.AOT_KERNELS`` plus what :func:`module_targets` collects by
walking every module of this package for an ``aot_targets()``), and :func:`entry_kernels` lists every launched ``@triton.jit`` kernel so that a test can assert
that none is missing from the table.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field

_OP = re.compile(r"^\s*(?:(%[\w.#:]+)\s*=\s*)?([a-z_]+\.[a-z_.]+)\b(.*)$")
_SSA = re.compile(r"%[\w.#]+")
_ARG = re.compile(r"(%\w+): !tt\.ptr<")
_LAYOUT_DEF = re.compile(r"^(#[\w]+) = (#ttg\.[\w_]+<\{.*\}>)\s*$")
_LOC_DEF = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")
_LOC_REF = re.compile(r"loc\((#loc\d*)\)\s*$")
_ITER_ARGS = re.compile(r"iter_args\(([^)]*)\)")
_READS = ("tt.load", "ttg.async_copy_global_to_local", "tt.descriptor_load")
_WRITES = ("tt.store", "tt.descriptor_store")
_ATOMICS = ("tt.atomic_rmw", "tt.atomic_cas")


@dataclass(frozen=True)
class Access:
    """One global-memory operation of the TTGIR."""

    kind: str
    """``read``, ``write`` or ``atomic``."""
    buffer: str
    """The kernel argument the pointer derives from (``Lse``, ``DQ``, ...)."""
    pointer: str
    """SSA name of the pointer operand."""
    layout: str
    """Layout of the pointer tensor (``scalar`` for a scalar pointer)."""
    shape: tuple[int, ...]
    """Shape of the pointer tensor (empty for a scalar)."""
    loc: tuple[str, int, int] | None
    """Innermost source location ``(file, line, column)``."""


@dataclass
class BufferVerdict:
    """How the accesses to one buffer that is both read and written are ordered."""

    buffer: str
    reads: int
    """Global reads of the buffer in the TTGIR."""
    writes: int
    """Global writes of the buffer in the TTGIR."""
    verdict: str
    """``owned`` (same pointer tensor, one warp per element), ``barrier`` (PTX barrier between last read and first
    write) or ``RACE: ...`` (neither)."""

    @property
    def ok(self) -> bool:
        """No cross-warp read/write hazard."""
        return not self.verdict.startswith("RACE")


@dataclass
class RaceReport:
    """The race check of one compiled kernel."""

    buffers: list[BufferVerdict] = field(default_factory=list)
    """One entry per buffer that the kernel reads and writes (others need no ordering)."""

    @property
    def ok(self) -> bool:
        """Every read-and-written buffer is thread-owned or behind a barrier."""
        return all(b.ok for b in self.buffers)

    def summary(self) -> str:
        """``Out: owned, Lse: barrier`` (``-`` when no buffer is both read and written)."""
        return ", ".join(f"{b.buffer}: {b.verdict}" for b in self.buffers) or "-"


def _layouts(ttgir: str) -> dict[str, str]:
    out = {}
    for line in ttgir.splitlines():
        m = _LAYOUT_DEF.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _ints(text: str, key: str) -> list[int]:
    m = re.search(key + r"\s*=\s*\[([\d,\s]*)\]", text)
    return [int(x) for x in m.group(1).split(",") if x.strip()] if m else []


def _resolve_layout(layout: str, aliases: dict[str, str]) -> str:
    return aliases.get(layout, layout)


def warp_replicated(layout: str, shape: tuple[int, ...], aliases: dict[str, str]) -> bool:
    """Whether two different warps hold the same element of a ``shape`` tensor in ``layout``.

    Blocked layouts and slices of them are computed (``warpsPerCTA`` warps along a dimension wrap around when the
    tensor is smaller than ``sizePerThread * threadsPerWarp * warpsPerCTA`` there; a slice replicates over the warps
    of the removed dimension); any other layout counts as replicated (the check then asks for a barrier).
    """
    text = _resolve_layout(layout, aliases)
    if not shape:
        return True
    if text.startswith("#ttg.slice<"):
        dim = int(re.search(r"dim = (\d+)", text).group(1))
        parent = re.search(r"parent = (#[\w.]+(?:<\{.*\}>)?)\}>$", text)
        if parent is None:
            return True
        return warp_replicated(parent.group(1), shape[:dim] + (1,) + shape[dim:], aliases)
    if not text.startswith("#ttg.blocked<"):
        return True
    spt, tpw, wpc = _ints(text, "sizePerThread"), _ints(text, "threadsPerWarp"), _ints(text, "warpsPerCTA")
    if not (len(spt) == len(tpw) == len(wpc) == len(shape)):
        return True
    return any(w > 1 and n < s * t * w for n, s, t, w in zip(shape, spt, tpw, wpc))


def _loc_table(ttgir: str) -> dict[str, str]:
    table = {}
    for line in ttgir.splitlines():
        m = _LOC_DEF.match(line)
        if m:
            table[m.group(1)] = m.group(2)
    return table


def _resolve_loc(ref: str, table: dict[str, str], depth: int = 0) -> tuple[str, int, int] | None:
    body = table.get(ref)
    if body is None or depth > 64:
        return None
    m = re.match(r'^"([^"]*)":(\d+):(\d+)$', body)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3))
    m = re.match(r"^callsite\((#loc\d*) at", body)  # inlined helper: the innermost location, as the PTX .loc
    if m:
        return _resolve_loc(m.group(1), table, depth + 1)
    m = re.search(r"(#loc\d*)", body)  # "name"(#locN), fused[...]
    return _resolve_loc(m.group(1), table, depth + 1) if m else None


def _pointer_type(rest: str) -> tuple[str, tuple[int, ...]]:
    """Layout and shape of the first pointer type in an op's type list."""
    m = re.search(r"tensor<([\dx]+)x!tt\.ptr<[^>]*>, (#[\w.]+(?:<\{[^}]*\}>)?)>", rest)
    if m:
        return m.group(2), tuple(int(x) for x in m.group(1).split("x"))
    return "scalar", ()


def global_accesses(ttgir: str) -> list[Access]:
    """Every global-memory access of the (single-function) TTGIR with the kernel argument it touches."""
    defs: dict[str, list[str]] = {}
    args: set[str] = set()
    locs = _loc_table(ttgir)
    ops: list[tuple[str, str, str]] = []
    for line in ttgir.splitlines():
        if "tt.func" in line:
            args.update(_ARG.findall(line))
            continue
        for group in _ITER_ARGS.findall(line):
            for pair in group.split(","):
                if "=" in pair:
                    lhs, rhs = (p.strip() for p in pair.split("=", 1))
                    defs[lhs] = [rhs]
        m = _OP.match(line)
        if not m:
            continue
        result, name, rest = m.groups()
        operands = _SSA.findall(rest.split(" : ")[0])
        if result:
            base = result.split(":")[0]
            defs[base] = operands
            defs[result] = operands
        ops.append((name, rest, line))

    def base_of(value: str, depth: int = 0) -> str | None:
        value = value.split("#")[0]
        if value in args:
            return value[1:]
        if depth > 256:
            return None
        for operand in defs.get(value, []):
            found = base_of(operand, depth + 1)
            if found:
                return found
        return None

    out = []
    for name, rest, line in ops:
        kind = "read" if name in _READS else "write" if name in _WRITES else "atomic" if name in _ATOMICS else None
        if kind is None:
            continue
        operands = _SSA.findall(rest.split(" : ")[0])
        if not operands:
            continue
        pointer = operands[0]
        buffer = base_of(pointer)
        if buffer is None:
            continue
        layout, shape = _pointer_type(rest)
        ref = _LOC_REF.search(line)
        out.append(Access(kind, buffer, pointer, layout, shape, _resolve_loc(ref.group(1), locs) if ref else None))
    return out


@dataclass(frozen=True)
class PtxOp:
    """A global access or a barrier of the PTX, in program order."""

    index: int
    kind: str
    """``read``, ``write``, ``atomic`` or ``barrier``."""
    loc: tuple[str, int, int] | None


_PTX_BARRIER = re.compile(r"^\s*(?:@!?%\w+\s+)?(?:bar|barrier)(?:\.cta)?\.(?:sync|red)\b")
_PTX_READ = re.compile(r"^\s*(?:@!?%\w+\s+)?(?:ld\.global|cp\.async(?:\.\w+)*\.shared(?:::\w+)?\.global)")
_PTX_WRITE = re.compile(r"^\s*(?:@!?%\w+\s+)?st\.global")
_PTX_ATOMIC = re.compile(r"^\s*(?:@!?%\w+\s+)?(?:atom|red)\.global")


def ptx_ops(ptx: str) -> list[PtxOp]:
    """Global loads/stores/atomics and CTA barriers of the PTX with the ``.loc`` each instruction is under."""
    files = dict(re.findall(r'^\s*\.file\s+(\d+)\s+"([^"]*)"', ptx, flags=re.M))
    current = None
    out = []
    for i, line in enumerate(ptx.splitlines()):
        m = re.match(r"^\s*\.loc\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            current = (files.get(m.group(1), m.group(1)), int(m.group(2)), int(m.group(3)))
            continue
        for kind, pattern in (("barrier", _PTX_BARRIER), ("read", _PTX_READ), ("write", _PTX_WRITE)):
            if pattern.match(line):
                out.append(PtxOp(i, kind, current))
                break
        else:
            if _PTX_ATOMIC.match(line):
                out.append(PtxOp(i, "atomic", current))
    return out


def check_compiled(ttgir: str, ptx: str) -> RaceReport:
    """The race check of one compiled kernel (its TTGIR and PTX); see the module docstring for the rules."""
    aliases = _layouts(ttgir)
    accesses = global_accesses(ttgir)
    ops = ptx_ops(ptx)
    barriers = [op.index for op in ops if op.kind == "barrier"]
    report = RaceReport()
    for buffer in sorted({a.buffer for a in accesses}):
        mine = [a for a in accesses if a.buffer == buffer]
        reads = [a for a in mine if a.kind in ("read", "atomic")]
        writes = [a for a in mine if a.kind in ("write", "atomic")]
        if not [a for a in mine if a.kind == "read"] and not [a for a in mine if a.kind == "write"]:
            continue  # atomics only: each update is indivisible
        if not reads or not writes:
            continue
        verdict = _order(mine, reads, writes, ops, barriers, aliases)
        report.buffers.append(BufferVerdict(buffer, len(reads), len(writes), verdict))
    return report


def _order(mine, reads, writes, ops, barriers, aliases) -> str:
    pointers = {a.pointer for a in mine}
    if len(pointers) == 1 and not any(warp_replicated(a.layout, a.shape, aliases) for a in mine):
        return "owned"
    if any(a.loc is None for a in mine):
        return "RACE: no source location to find the accesses in the PTX"
    ptx_reads = _matching(ops, reads, ("read", "atomic"))
    ptx_writes = _matching(ops, writes, ("write", "atomic"))
    if ptx_reads is None or ptx_writes is None:
        return "RACE: accesses not found in the PTX"
    last_read, first_write = max(ptx_reads), min(ptx_writes)
    if last_read > first_write:
        return "RACE: read after write"
    if any(last_read < b < first_write for b in barriers):
        return "barrier"
    layouts = sorted({a.layout for a in mine})
    return f"RACE: no barrier between the last read and the first write (layouts {', '.join(layouts)})"


LINE_SLACK = 8
"""A predicated vector load is emitted under ``.loc`` lines a few past its own (the ``mov`` of each ``other`` value
gets the next line, same column); an access without an exact match is looked up within this many lines."""


def _matching(ops: list[PtxOp], accesses: list[Access], kinds: tuple[str, ...]) -> list[int] | None:
    """PTX instruction indices of ``accesses`` (``None`` if one of them is not found).

    Exact ``.loc`` first; else same file and column up to :data:`LINE_SLACK` lines later. A wider match can only
    add instructions, which moves the last read later or the first write earlier: stricter, never laxer.
    """
    found: set[int] = set()
    for access in accesses:
        file, line, col = access.loc
        exact = [op.index for op in ops if op.kind in kinds and op.loc == access.loc]
        near = [
            op.index
            for op in ops
            if op.kind in kinds
            and op.loc
            and op.loc[0] == file
            and op.loc[2] == col
            and 0 <= op.loc[1] - line <= LINE_SLACK
        ]
        hits = exact or near
        if not hits:
            return None
        found.update(hits)
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# the kernel table
# ----------------------------------------------------------------------------------------------------------------


def kernel_modules() -> list:
    """Every module of the ``megatron_agentic.kernels`` package (imported)."""
    import megatron_agentic.kernels as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))
    return [importlib.import_module(f"{pkg.__name__}.{name}") for name in names]


def module_targets() -> list:
    """Every :class:`megatron_agentic.kernels.aot.CompileTarget` that a kernel module lists in its ``aot_targets()``.

    The flash-attention kernels are listed in :data:`megatron_agentic.kernels.flash_attention.AOT_KERNELS` (compiled
    with their resource table by :mod:`megatron_agentic.kernels.aot`); every other kernel module lists its own.
    """
    targets = []
    for module in kernel_modules():
        fn = getattr(module, "aot_targets", None)
        if callable(fn):
            targets.extend(fn())
    return targets


def entry_kernels() -> dict[str, str]:
    """Launched ``@triton.jit`` functions of every kernel module (``module:function``), helpers excluded.

    A helper is a JIT function that another JIT function of the same module calls; everything else is launched
    from Python and must appear in the kernel table. Works with the interpreter on (``InterpretedFunction``) or off.
    """
    import inspect

    from triton.runtime.jit import KernelInterface

    found: dict[str, str] = {}
    for module in kernel_modules():
        sources = {}
        for name, obj in vars(module).items():
            fn = getattr(obj, "fn", None)
            if isinstance(obj, KernelInterface) and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                sources[name] = inspect.getsource(fn)
        for name in sources:
            pattern = re.compile(rf"\b{re.escape(name)}\s*\(")
            if not any(pattern.search(src) for other, src in sources.items() if other != name):
                found[f"{module.__name__}:{name}"] = name
    return found
