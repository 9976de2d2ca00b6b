"""Synthesis client throughput against the loopback fake server: sustained requests/s vs the bound C/L.

A server with fixed latency L (seconds per reply) and a client with concurrency C can at best complete C/L
requests per second; this benchmark measures how close :class:`data_tools.synthesis.llm.client.LLMClient` gets (with a
JSON schema sent, parsed and validated on every reply, and the sqlite request cache writing every answer) and
the client's CPU time per request. The server runs in a separate process so its CPU does not count.

    python benchmarks/bench_synthesis.py                      # C = 1..256, L = 1.0 s
    python benchmarks/bench_synthesis.py --latency 0.5 --concurrency 64 128 --rounds 8
    python benchmarks/bench_synthesis.py --pipeline --latency 0.5 --concurrency 64   # whole FAS pipeline

``--pipeline`` runs the complete ``data fas`` pipeline (openai backend, request cache, judge, dedup, JSONL
commit) on memory built from the built-in corpus, against a server answering with the scripted FAS responder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_tools.synthesis.llm.client import LLMClient, LLMConfig  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "think": {"type": "string"},
        "action": {"type": "object", "properties": {"name": {"type": "string"}, "query": {"type": "array"}}},
    },
    "required": ["think", "action"],
}


def start_server(latency: float, responder: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python -m data_tools.synthesis.llm.fake_server`` and return it with its base URL."""
    extra = ["--responder", responder] if responder else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_tools.synthesis.llm.fake_server", "--latency", str(latency), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {url!r}")
    return proc, url


def measure(url: str, concurrency: int, latency: float, rounds: int, cache_dir: str) -> dict[str, float]:
    """Run ``rounds * concurrency`` requests and return throughput and CPU figures."""
    n = rounds * concurrency
    cfg = LLMConfig(
        urls=[url],
        model="bench",
        concurrency=concurrency,
        timeout_s=60 + 10 * latency,
        max_retries=2,
        cache_path=os.path.join(cache_dir, f"c{concurrency}.sqlite"),
    )
    client = LLMClient(cfg)
    reqs = [
        {"messages": [{"role": "user", "content": f"request {concurrency}-{i}"}], "schema": SCHEMA, "seed": i}
        for i in range(n)
    ]

    async def warm() -> None:  # open the connections first: connection set-up is not steady state
        await asyncio.gather(*(client.chat([{"role": "user", "content": f"warm {i}"}]) for i in range(concurrency)))

    async def go():
        await warm()
        cpu0, t0 = time.process_time(), time.perf_counter()
        res = await asyncio.gather(*(client.chat(**r) for r in reqs))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await client.aclose()
        return res, wall, cpu

    res, wall, cpu = asyncio.run(go())
    client.close()
    ok = sum(r.ok for r in res)
    rate = ok / wall
    bound = concurrency / latency
    return {
        "C": concurrency,
        "n": n,
        "ok": ok,
        "wall_s": wall,
        "req_s": rate,
        "bound": bound,
        "ratio": rate / bound,
        "cpu_ms_per_req": 1000 * cpu / n,
    }


def measure_pipeline(url: str, concurrency: int, latency: float, items: int, work_dir: str) -> dict[str, float]:
    """Run FAS (openai backend) on ``items`` memory items; return HTTP requests/s and CPU per request."""
    from data_tools.synthesis.fas.pipeline import FasConfig, run_fas
    from data_tools.synthesis.memory import main as memory_main

    memory = os.path.join(work_dir, "memory.jsonl")
    if not os.path.exists(memory):
        memory_main(["--builtin-wiki", "--limit", str(2 * items), "--output", memory])
    cfg = FasConfig(
        memory_path=memory,
        output_dir=os.path.join(work_dir, f"fas-c{concurrency}"),
        questions_per_memory=3,
        backend="openai",
        max_items=items,
        progress=False,
        llm=LLMConfig(
            urls=[url],
            model="bench",
            concurrency=concurrency,
            timeout_s=60 + 10 * latency,
            cache_path=os.path.join(work_dir, f"fas-c{concurrency}.sqlite"),
        ),
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = run_fas(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = summary["llm"]["http_requests"]
    bound = concurrency / latency
    return {
        "C": concurrency,
        "n": n,
        "ok": summary["llm"]["succeeded"],
        "req_s": n / wall,
        "bound": bound,
        "ratio": n / wall / bound,
        "cpu_ms_per_req": 1000 * cpu / n,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one row per concurrency."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=1.0, help="server seconds per reply (L)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=6, help="requests per slot (n = rounds * C)")
    p.add_argument("--pipeline", action="store_true", help="measure the whole FAS pipeline instead of the client")
    p.add_argument("--items", type=int, default=200, help="memory items for --pipeline")
    args = p.parse_args(argv)
    proc, url = start_server(args.latency, "data_tools.synthesis.fas.scripted:FasResponder" if args.pipeline else None)
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            print(f"fake server {url}, latency L = {args.latency:.3f} s, {os.cpu_count()} CPUs")
            print(f"{'C':>5} {'requests':>9} {'req/s':>9} {'bound C/L':>10} {'ratio':>7} {'client CPU/req':>15}")
            for c in args.concurrency:
                if args.pipeline:
                    r = measure_pipeline(url, c, args.latency, args.items, cache_dir)
                else:
                    r = measure(url, c, args.latency, args.rounds, cache_dir)
                print(
                    f"{r['C']:>5} {r['n']:>9} {r['req_s']:>9.1f} {r['bound']:>10.1f} {r['ratio']:>7.3f} "
                    f"{r['cpu_ms_per_req']:>12.2f} ms" + ("" if r["ok"] == r["n"] else f"  ({r['n'] - r['ok']} failed)")
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
