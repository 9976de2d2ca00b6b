"""Command-line arguments shared by the synthesis tools: LLM backend selection and client settings."""

from __future__ import annotations

import argparse
import json
import os

from data_tools.synthesis.llm.client import LLMConfig

BACKENDS = ("openai", "template")


def add_llm_args(
    parser: argparse.ArgumentParser, *, default_backend: str = "template", backends: tuple[str, ...] = BACKENDS
) -> None:
    """Add ``--backend``, ``--llm-url`` (repeatable), ``--model``, ``--concurrency`` and client tuning flags."""
    g = parser.add_argument_group("generation backend / LLM client")
    g.add_argument(
        "--backend",
        choices=backends,
        default=default_backend,
        help=f"'openai': an OpenAI-compatible server (vLLM, SGLang, OpenAI); 'template': the deterministic "
        f"offline generator (default: {default_backend})",
    )
    g.add_argument(
        "--llm-url",
        action="append",
        default=None,
        metavar="URL",
        help="OpenAI-compatible base URL, e.g. http://node1:8000/v1 (repeat for several servers; "
        "default: $OPENAI_BASE_URL)",
    )
    g.add_argument("--model", default=os.environ.get("LLM_MODEL", "default"), help="model name the server serves")
    g.add_argument("--concurrency", type=int, default=64, help="requests in flight over all URLs (default 64)")
    g.add_argument("--timeout", type=float, default=120.0, help="per-attempt timeout in seconds (default 120)")
    g.add_argument("--max-retries", type=int, default=5, help="transport retries per request (default 5)")
    g.add_argument("--max-reasks", type=int, default=2, help="re-asks after an invalid structured reply (default 2)")
    g.add_argument(
        "--cache",
        default=None,
        metavar="SQLITE",
        help="request cache file (default: <output>/llm_cache.sqlite where the tool has an output dir)",
    )
    g.add_argument("--no-cache", action="store_true", help="disable the request cache")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--max-tokens", type=int, default=2048)
    g.add_argument("--seed", type=int, default=0, help="base seed; per-request seeds derive from it")
    g.add_argument(
        "--extra-body",
        type=parse_extra_body,
        default=None,
        metavar="JSON",
        help='extra request fields sent with every request, e.g. \'{"chat_template_kwargs": '
        '{"enable_thinking": false}, "top_k": 20}\' (vLLM/SGLang sampling extras; part of the cache key)',
    )


def parse_extra_body(text: str) -> dict:
    """``--extra-body`` value: a JSON object (argparse turns the ``ValueError`` into a usage error)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(obj).__name__}")
    return obj


def llm_config_from_args(args: argparse.Namespace, *, default_cache: str | None = None) -> LLMConfig:
    """Build an :class:`LLMConfig` from parsed :func:`add_llm_args` arguments (exits with a message if invalid)."""
    urls = list(args.llm_url or [])
    if not urls and os.environ.get("OPENAI_BASE_URL"):
        urls = [os.environ["OPENAI_BASE_URL"]]
    if getattr(args, "backend", "openai") == "openai" and not urls:
        raise SystemExit("--backend openai needs --llm-url URL (or $OPENAI_BASE_URL)")
    cache = None if args.no_cache else (args.cache or default_cache)
    try:
        return LLMConfig(
            urls=urls,
            model=args.model,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            max_reasks=args.max_reasks,
            cache_path=cache,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
            extra_body=getattr(args, "extra_body", None),
        )
    except ValueError as exc:
        raise SystemExit(f"invalid LLM settings: {exc}") from None
