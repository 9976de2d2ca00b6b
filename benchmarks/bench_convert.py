"""Benchmark ``convert hf-to-mcore`` / ``mcore-to-hf`` on a full-width Qwen3-30B-A3B cut to a few layers.

Generates a random HF checkpoint with the real Qwen3-30B-A3B widths (hidden 2048, 32 heads / 4 KV heads of 128,
128 experts of FFN 768, vocab 151936, untied embeddings; bf16 safetensors, Hub key names) and ``--layers`` layers
(default 2), then, each in a fresh interpreter (imports not timed or counted):

- **stream**: ``convert hf-to-mcore`` (this project: no model, tensors streamed into ``torch_dist``), chunks timed by
  class, so the seconds per decoder layer and the fixed part (embedding, output layer) are separate;
- **export**: ``convert mcore-to-hf`` of that checkpoint (layer by layer);
- **model** (baseline, ``--baseline``): the previous converter's method, i.e. build the megatron-core ``GPTModel``
  (local spec, TP=PP=EP=1), ``load_state_dict`` the converted HF tensors, ``dist_checkpointing.save``.

Prints wall seconds, seconds per layer, peak RSS and peak RSS growth over the imports, extrapolates to 48 layers,
and the ratio against the baseline. Temporary files are removed. Run:
``OMP_NUM_THREADS=1 python benchmarks/bench_convert.py [--layers 2] [--baseline]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1024**3


def _hwm() -> int:
    """Peak RSS in bytes of this process image (VmHWM; ru_maxrss would include the parent's, inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _single_rank() -> None:
    """One-process gloo group with the CPU redirections, as ``convert`` runs its rank."""
    import os

    import torch

    from megatron_agentic.convert.runtime import _free_port
    from megatron_agentic.platform import setup_platform

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    os.environ.update(LOCAL_RANK="0", MEGATRON_AGENTIC_FORCE_CPU="1")
    setup_platform(0)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)


def _child_stream(hf: str, out: str) -> dict:
    import rich.progress  # noqa: F401
    import torch.distributed.checkpoint  # noqa: F401

    import megatron_agentic.training.checkpoint  # noqa: F401
    from megatron_agentic.convert import hf_to_mcore
    from megatron_agentic.convert.dcp_stream import write_torch_dist
    from megatron_agentic.convert.hf_io import HFCheckpoint
    from megatron_agentic.models.qwen3_moe.hf_mapping import preset_from_hf_config

    base = _hwm()
    t0 = time.perf_counter()
    hf_ckpt = HFCheckpoint(hf)
    arch = preset_from_hf_config(hf_ckpt.config)
    chunks, objects = hf_to_mcore.plan_chunks(hf_ckpt, arch, hf_to_mcore.TargetShards(), hf_to_mcore.DTYPES["bf16"])
    hf_to_mcore.check_sources(hf_ckpt, arch)
    starts: list[tuple[float, bool]] = []

    def timed(chunk):
        def produce():
            starts.append((time.perf_counter(), chunk.key.startswith("decoder.layers.")))
            return chunk.produce()

        return dataclasses.replace(chunk, produce=produce)

    common = {"arch": dataclasses.asdict(arch)}
    write_torch_dist(Path(out) / "iter_0000000", [timed(c) for c in chunks], objects, common)
    (Path(out) / "latest_checkpointed_iteration.txt").write_text("0\n")
    end = time.perf_counter()
    layer_s = sum(b[0] - a[0] for a, b in zip(starts, starts[1:] + [(end, False)]) if a[1])
    return {"seconds": end - t0, "layer_seconds": layer_s, "peak_rss": _hwm(), "growth": _hwm() - base}


def _child_export(ckpt: str, out: str) -> dict:
    from megatron_agentic.convert import mcore_to_hf

    _single_rank()
    base = _hwm()
    t0 = time.perf_counter()
    mcore_to_hf._worker(0, 1, ckpt, out, "bf16", None, None)
    return {"seconds": time.perf_counter() - t0, "peak_rss": _hwm(), "growth": _hwm() - base}


def _child_model(hf: str, out: str) -> dict:
    """The previous converter's method (build the model, load it, save it with megatron-core), one rank."""
    import megatron.core.dist_checkpointing  # noqa: F401

    _single_rank()
    base = _hwm()
    t0 = time.perf_counter()
    _model_worker(0, 1, hf, out)
    return {"seconds": time.perf_counter() - t0, "peak_rss": _hwm(), "growth": _hwm() - base}


def _model_worker(rank: int, world: int, hf: str, out: str) -> None:
    from megatron.core import dist_checkpointing

    from megatron_agentic.convert import runtime
    from megatron_agentic.convert.hf_io import HFCheckpoint
    from megatron_agentic.models.qwen3_moe import hf_mapping as mapping

    hf_ckpt = HFCheckpoint(hf)
    arch = mapping.preset_from_hf_config(hf_ckpt.config)
    runtime.init_layout(1, 1, 1)
    model = runtime.build_local_model(arch, 1, 1, 1, "bf16")
    names = list(runtime.tensor_state(model))
    full = {
        n: mapping.megatron_tensor(mapping.global_name(n, runtime.layer_numbers(model), 0), hf_ckpt.get, arch)
        for n in names
    }
    model.load_state_dict(full, strict=True)
    del full
    target = Path(out) / "iter_0000000"
    target.mkdir(parents=True)
    dist_checkpointing.save({"model": model.sharded_state_dict()}, str(target))


def _run_child(mode: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also time the build-a-model method")
    parser.add_argument("--workdir", default=None, help="where the temporary checkpoints go (default: system temp)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        print(json.dumps({"stream": _child_stream, "export": _child_export, "model": _child_model}[mode](*rest)))
        return

    from megatron_agentic.convert.synthetic import hf_shapes, write_random_hf_checkpoint
    from megatron_agentic.models.qwen3_moe.presets import get_preset

    arch = dataclasses.replace(get_preset("qwen3-30b-a3b"), num_layers=args.layers)
    sizes = [(n, 2 * math.prod(s)) for n, s in hf_shapes(arch)]
    total = sum(b for _, b in sizes)
    layer_bytes = sum(b for n, b in sizes if n.startswith("model.layers.0."))
    full48 = dataclasses.replace(arch, num_layers=48)
    total48 = sum(2 * math.prod(s) for _, s in hf_shapes(full48))
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        hf = write_random_hf_checkpoint(work / "hf", arch, seed=0)
        print(
            f"generated {args.layers}-layer full-width checkpoint: {total / GB:.2f} GiB bf16 in {time.perf_counter() - t0:.0f} s"
        )
        stream = _run_child("stream", str(hf), str(work / "ckpt"))
        per_layer = stream["layer_seconds"] / args.layers
        fixed = stream["seconds"] - stream["layer_seconds"]
        rows = [("hf-to-mcore (stream)", stream["seconds"], per_layer, stream["peak_rss"], stream["growth"])]
        export = _run_child("export", str(work / "ckpt"), str(work / "hf_back"))
        rows.append(("mcore-to-hf (stream)", export["seconds"], None, export["peak_rss"], export["growth"]))
        shutil.rmtree(work / "hf_back")
        if args.baseline:
            model = _run_child("model", str(hf), str(work / "ckpt_model"))
            rows.append(("build-a-model (old)", model["seconds"], None, model["peak_rss"], model["growth"]))
        print(
            f"model bytes: {args.layers} layers {total / GB:.2f} GiB, one decoder layer {layer_bytes / GB:.2f} GiB, "
            f"48 layers {total48 / GB:.1f} GiB"
        )
        print(f"{'path':24s} {'wall s':>8s} {'s/layer':>8s} {'peak RSS GiB':>13s} {'growth GiB':>11s}")
        for name, sec, spl, peak, growth in rows:
            spl_s = f"{spl:8.1f}" if spl is not None else f"{'-':>8s}"
            growth_s = f"{growth / GB:11.2f}" if growth is not None else f"{'-':>11s}"
            print(f"{name:24s} {sec:8.1f} {spl_s} {peak / GB:13.2f} {growth_s}")
        print(
            f"hf-to-mcore extrapolated to 48 layers: {fixed + 48 * per_layer:.0f} s "
            f"({fixed:.0f} s embedding/output + 48 x {per_layer:.1f} s); peak memory independent of the layer count"
        )
        if args.baseline:
            print(
                f"stream/model ratios: peak RSS {stream['peak_rss'] / model['peak_rss']:.2f}, growth over imports "
                f"{stream['growth'] / model['growth']:.3f}, wall {stream['seconds'] / model['seconds']:.2f}; "
                f"the model path holds the whole model (~{total48 / GB:.0f} GiB at 48 layers)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
