"""Async OpenAI-compatible chat-completions client for synthesis at server-saturating throughput.

One :class:`LLMClient` talks to one or more OpenAI-compatible servers (vLLM, SGLang, OpenAI) with:

* bounded concurrency: C request slots, each with its own keep-alive connection to a home URL (slots are
  spread evenly over the base URLs, a retry goes to the next URL, a URL that keeps failing is skipped a while);
* timeouts, and retries with exponential backoff + jitter that honour ``Retry-After`` on 429/503, for HTTP 5xx,
  timeouts, connection resets and malformed/truncated response bodies;
* structured outputs: a JSON schema is sent as ``response_format`` and the reply is validated against it; an
  invalid, empty or unparseable reply is re-asked a bounded number of times, then reported as failed;
* a sqlite request cache keyed by (model, messages, sampling, extra body, seed, schema), so reruns are free
  and a killed job resumes exactly where it was (the current date in a prompt does not change the key);
* token usage per request and in total (prompt / completion / reasoning tokens, from the server's ``usage``);
* truncation detection: a reply with ``finish_reason == "length"`` is asked again once with a larger
  ``max_tokens`` budget, then failed as ``truncated`` (never cached); a schema reply cut at the limit whose JSON
  is nevertheless complete and valid is used as it is (counted in ``length_parsed``);
* ``reasoning_content`` (vLLM/SGLang reasoning parsers) kept next to the reply and in the cache;
* ``extra_body``: server-specific fields (``chat_template_kwargs``, ``top_k``, ...) sent with every request.

:meth:`LLMClient.chat` never raises for server faults: it returns an :class:`LLMResult` whose ``error`` names
the reason. :attr:`LLMClient.stats` counts requests, retries, re-asks, cache hits and failures by reason.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from data_tools.synthesis.llm.cache import RequestCache, request_key
from data_tools.synthesis.llm.schema import ReplyError, parse_json_reply, response_format

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Requests go through httpcore (httpx's engine) directly: ~30% less client CPU per request than httpx's client
# layer (cookies, hooks, models). httpcore's pool does O(pool size) socket checks per request, i.e. O(C^2) CPU at
# concurrency C (measured: ~45 ms CPU per request at C = 256 with one shared pool; 16-connection pools still
# doubled the CPU of 1-connection ones), so every request slot owns a tiny pool: one keep-alive connection to
# its home URL (slot % number of URLs), plus one to another URL when it fails over.
DOWN_AFTER_FAILURES = 3
"""Consecutive connection failures/timeouts after which a URL is skipped for :data:`DOWN_FOR_S` seconds."""
DOWN_FOR_S = 5.0


@dataclass
class LLMConfig:
    """Connection, sampling and robustness settings of an :class:`LLMClient`."""

    urls: list[str] = field(default_factory=list)
    """OpenAI-compatible base URLs (``http://host:8000/v1``); requests are spread over all of them."""
    model: str = "default"
    """Model name sent with every request (what the server serves, e.g. ``Qwen/Qwen3-30B-A3B``)."""
    concurrency: int = 64
    """Maximum requests in flight over all URLs."""
    timeout_s: float = 120.0
    """Per-attempt timeout (connect, read, write and pool each) in seconds."""
    max_retries: int = 5
    """Transport-level retries per attempt (HTTP 429/5xx, timeouts, resets, malformed bodies)."""
    cache_path: str | None = None
    """sqlite file caching successful answers; ``None`` disables the cache."""
    temperature: float = 0.7
    """Default sampling temperature (overridable per request)."""
    top_p: float = 0.95
    """Default nucleus sampling ``top_p`` (overridable per request)."""
    max_tokens: int = 2048
    """Default completion token limit (overridable per request)."""
    seed: int | None = 0
    """Default per-request seed when a request gives none (``None``: send no seed)."""
    max_reasks: int = 2
    """How many times an empty, non-JSON or schema-invalid reply is asked again before the request fails."""
    backoff_base_s: float = 0.5
    """First retry delay; doubles per retry (with +-50% jitter) up to :attr:`backoff_max_s`."""
    backoff_max_s: float = 30.0
    """Upper bound of the exponential backoff delay."""
    retry_after_max_s: float = 120.0
    """Upper bound on a server's ``Retry-After`` that is honoured."""
    api_key: str | None = None
    """Bearer token; ``None`` reads ``$OPENAI_API_KEY`` (most local servers need none)."""
    use_response_format: bool = True
    """Send the schema as ``response_format`` (structured outputs); replies are validated either way."""
    strict_schema: bool = False
    """Set ``strict`` in ``response_format`` (OpenAI's strict mode needs fully closed schemas; vLLM/SGLang
    constrain decoding either way)."""
    extra_body: dict[str, Any] | None = None
    """Extra top-level request fields sent with every request, e.g. ``{"chat_template_kwargs":
    {"enable_thinking": false}, "top_k": 20}`` (vLLM/SGLang sampling extras); part of the cache key."""
    length_retry_factor: float = 2.0
    """A reply cut by the token limit (``finish_reason == "length"``) is asked once more with ``max_tokens``
    multiplied by this factor; if that is cut too, the request fails as ``truncated``."""

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            self.urls = [self.urls]
        self.urls = [u.strip() for u in self.urls if u and u.strip()]
        for u in self.urls:
            parts = urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"LLM URL must be http(s)://host[:port][/v1], got {u!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0 or self.max_reasks < 0:
            raise ValueError("max_retries and max_reasks must be >= 0")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_max_s")
        if self.extra_body is not None and not isinstance(self.extra_body, dict):
            raise ValueError(f"extra_body must be a JSON object, got {type(self.extra_body).__name__}")
        reserved = {"model", "messages", "seed", "response_format"} & set(self.extra_body or {})
        if reserved:
            raise ValueError(f"extra_body may not set {sorted(reserved)} (the client sets them)")
        if self.length_retry_factor < 1.0:
            raise ValueError(f"length_retry_factor must be >= 1, got {self.length_retry_factor}")


@dataclass
class LLMResult:
    """Outcome of one logical request."""

    content: str
    """The final reply text ("" when the request failed before any reply)."""
    parsed: Any | None
    """The reply parsed as JSON and validated, when a schema was given."""
    cached: bool
    """Whether the answer came from the request cache."""
    attempts: int
    """HTTP attempts made (0 for a cache hit)."""
    error: str | None
    """Failure reason (``http_500``, ``http_429``, ``timeout``, ``connection``, ``malformed_response``,
    ``empty_completion``, ``invalid_json``, ``schema_invalid``, ``http_400``...) or ``None`` on success."""
    detail: str = ""
    """Extra detail for a failure."""
    reasoning_content: str | None = None
    """The server's separate reasoning text (``message.reasoning_content``, vLLM/SGLang reasoning parsers)."""
    usage: dict[str, int] = field(default_factory=dict)
    """Tokens this request spent over all its HTTP attempts: ``prompt_tokens``, ``completion_tokens``,
    ``reasoning_tokens`` (empty for a cache hit)."""
    finish_reason: str | None = None
    """``finish_reason`` of the last reply (``stop``, ``length``, ...)."""

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None


@dataclass
class LLMStats:
    """Counters of an :class:`LLMClient` (cumulative)."""

    requests: int = 0
    """Logical requests (calls of :meth:`LLMClient.chat`)."""
    http_requests: int = 0
    """HTTP attempts sent."""
    retries: int = 0
    """Transport-level retries (after 429/5xx/timeouts/resets/malformed bodies)."""
    reasks: int = 0
    """Re-asks after empty, non-JSON or schema-invalid replies."""
    cache_hits: int = 0
    """Requests answered from the cache."""
    succeeded: int = 0
    """Requests that produced a (validated) answer, cached or not."""
    failures: Counter = field(default_factory=Counter)
    """Failed requests by final reason."""
    retried_errors: Counter = field(default_factory=Counter)
    """Errors that were retried or re-asked, by reason."""
    busy_s: float = 0.0
    """Sum of HTTP attempt durations (seconds)."""
    prompt_tokens: int = 0
    """Prompt tokens the server reported over all replies (cache hits cost none)."""
    completion_tokens: int = 0
    """Completion tokens the server reported (reasoning included, as OpenAI and vLLM count them)."""
    reasoning_tokens: int = 0
    """Reasoning tokens (``usage.completion_tokens_details.reasoning_tokens``, or counted by the reasoning
    text's whitespace words when the server gives a ``reasoning_content`` but no count)."""
    length_retries: int = 0
    length_parsed: int = 0
    """Replies cut by the token limit that were asked again with a larger budget."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable snapshot."""
        return {
            "requests": self.requests,
            "http_requests": self.http_requests,
            "retries": self.retries,
            "reasks": self.reasks,
            "cache_hits": self.cache_hits,
            "succeeded": self.succeeded,
            "failed": sum(self.failures.values()),
            "failures": dict(sorted(self.failures.items())),
            "retried_errors": dict(sorted(self.retried_errors.items())),
            "length_retries": self.length_retries,
            "length_parsed": self.length_parsed,
            "truncated": self.failures.get("truncated", 0),
            "usage": self.usage(),
        }

    def usage(self) -> dict[str, int]:
        """Token totals: ``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens``, ``total_tokens``."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def add_usage(self, usage: dict[str, int]) -> None:
        """Add one reply's token counts."""
        self.prompt_tokens += usage.get("prompt_tokens", 0)
        self.completion_tokens += usage.get("completion_tokens", 0)
        self.reasoning_tokens += usage.get("reasoning_tokens", 0)


@dataclass
class _Completion:
    """One successful HTTP reply, parsed."""

    content: str
    reasoning: str | None
    finish_reason: str | None
    usage: dict[str, int]


def parse_usage(usage: Any, reasoning: str | None) -> dict[str, int]:
    """Token counts of one reply from its ``usage`` object (missing fields count 0)."""
    out = {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0}
    if isinstance(usage, dict):
        for k in ("prompt_tokens", "completion_tokens"):
            if isinstance(usage.get(k), int):
                out[k] = usage[k]
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
            out["reasoning_tokens"] = details["reasoning_tokens"]
        elif isinstance(usage.get("reasoning_tokens"), int):
            out["reasoning_tokens"] = usage["reasoning_tokens"]
    if not out["reasoning_tokens"] and reasoning:
        out["reasoning_tokens"] = len(reasoning.split())
    return out


@dataclass
class _Endpoint:
    url: str
    inflight: int = 0
    sent: int = 0
    fail_streak: int = 0
    down_until: float = 0.0


def chat_completions_url(base: str) -> str:
    """``http://h:8000/v1`` -> ``http://h:8000/v1/chat/completions`` (a bare host gets ``/v1``)."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if urlsplit(base).path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Reply(Exception):
    """Internal: a failed transport attempt with its reason."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None, retryable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.retryable = retryable
        self.attempts = 0


class LLMClient:
    """OpenAI-compatible async chat client; see the module docstring. Use as ``async with`` or call :meth:`aclose`."""

    def __init__(self, cfg: LLMConfig) -> None:
        if not cfg.urls:
            raise ValueError("LLMClient needs at least one URL (--llm-url)")
        self.cfg = cfg
        self.stats = LLMStats()
        self.cache = RequestCache(cfg.cache_path) if cfg.cache_path else None
        self._endpoints = [_Endpoint(chat_completions_url(u)) for u in cfg.urls]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: list[httpcore.AsyncConnectionPool] | None = None
        self._slots: asyncio.Queue[int] | None = None
        self._rng = random.Random()
        self._sleep = asyncio.sleep  # replaceable in tests to observe backoff delays
        key = cfg.api_key if cfg.api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = [(b"Content-Type", b"application/json"), (b"Accept", b"application/json")]
        if key:
            self._headers.append((b"Authorization", f"Bearer {key}".encode()))
        t = cfg.timeout_s
        self._timeouts = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}

    # -- event-loop bound state -------------------------------------------------------------------------------
    def _state(self) -> tuple[list[httpcore.AsyncConnectionPool], asyncio.Queue[int]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._http is None or self._slots is None:
            n = self.cfg.concurrency
            # one TLS context for all slots (each costs ~0.2 s to build); none needed for plain-http servers
            https = any(e.url.startswith("https:") for e in self._endpoints)
            ssl_context = httpx.create_ssl_context() if https else None
            u = len(self._endpoints)
            self._http = [
                httpcore.AsyncConnectionPool(
                    ssl_context=ssl_context, max_connections=u, max_keepalive_connections=u, keepalive_expiry=30.0
                )
                for _ in range(n)
            ]
            self._slots = asyncio.Queue()
            for slot in range(n):
                self._slots.put_nowait(slot)
            self._loop = loop
        return self._http, self._slots

    async def aclose(self) -> None:
        """Close HTTP connections (the cache stays open; see :meth:`close`)."""
        if self._http is not None and self._loop is asyncio.get_running_loop():
            for pool in self._http:
                await pool.aclose()
        self._http = None
        self._slots = None
        self._loop = None

    def close(self) -> None:
        """Close the request cache."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public API ---------------------------------------------------------------------------------------------
    def sampling_params(self, **overrides: Any) -> dict[str, Any]:
        """The sampling parameters a request would use: config defaults updated by ``overrides``."""
        params: dict[str, Any] = {
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_tokens,
        }
        params.update({k: v for k, v in overrides.items() if v is not None})
        return params

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        schema: dict | None = None,
        seed: int | None = None,
        schema_name: str | None = None,
        **sampling: Any,
    ) -> LLMResult:
        """Send one chat request; with ``schema`` the reply is parsed, validated and re-asked if needed.

        Never raises for server faults: a request that still fails after retries/re-asks returns a result with
        ``error`` set (and is not cached).
        """
        seed = self.cfg.seed if seed is None else seed
        params = self.sampling_params(**sampling)
        key_params = {**params, "extra_body": self.cfg.extra_body} if self.cfg.extra_body else params
        key = request_key(self.cfg.model, messages, key_params, seed, schema)
        self.stats.requests += 1
        if self.cache is not None:
            entry = self.cache.get_entry(key)
            if entry is not None:
                hit, reasoning = entry
                try:
                    parsed = parse_json_reply(hit, schema) if schema is not None else None
                except ReplyError:
                    log.warning("ignoring a cached reply that no longer validates (key %s)", key[:12])
                else:
                    self.stats.cache_hits += 1
                    self.stats.succeeded += 1
                    return LLMResult(
                        content=hit, parsed=parsed, cached=True, attempts=0, error=None, reasoning_content=reasoning
                    )
        clients, slots = self._state()
        slot = await slots.get()
        try:
            return await self._ask(slot, clients[slot], key, messages, params, seed, schema, schema_name)
        finally:
            slots.put_nowait(slot)

    def run_batch(self, requests: list[dict[str, Any]]) -> list[LLMResult]:
        """Run many requests with bounded concurrency from synchronous code; results are in input order.

        Each request dict has ``messages`` and optionally ``schema``, ``seed``, ``schema_name`` and sampling
        parameters (``temperature``, ``top_p``, ``max_tokens``, ...).
        """

        async def _all() -> list[LLMResult]:
            try:
                return list(await asyncio.gather(*(self.chat(**dict(r)) for r in requests)))
            finally:
                await self.aclose()

        return asyncio.run(_all())

    # -- internals -----------------------------------------------------------------------------------------------
    async def _ask(
        self,
        slot: int,
        http: httpcore.AsyncConnectionPool,
        key: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        seed: int | None,
        schema: dict | None,
        schema_name: str | None,
    ) -> LLMResult:
        conv = list(messages)
        attempts = 0
        content = ""
        last: ReplyError | None = None
        usage: Counter = Counter()
        reply = _Completion("", None, None, {})
        budget_raised = False
        for reask in range(self.cfg.max_reasks + 1):
            # A re-ask varies the seed so a deterministic server does not repeat the same bad answer.
            send_seed = seed if reask == 0 or seed is None else seed + 1_000_003 * reask
            try:
                reply, n = await self._send(slot, http, conv, params, send_seed, schema, schema_name)
                attempts += n
                self.stats.add_usage(reply.usage)
                usage.update(reply.usage)
                if reply.finish_reason == "length" and not budget_raised and not _complete_json(reply, schema):
                    # Cut by the token limit: once more with a larger budget (same seed, same conversation).
                    budget_raised = True
                    self.stats.length_retries += 1
                    self.stats.retried_errors["truncated"] += 1
                    params = {**params, "max_tokens": int(params["max_tokens"] * self.cfg.length_retry_factor)}
                    reply, n = await self._send(slot, http, conv, params, send_seed, schema, schema_name)
                    attempts += n
                    self.stats.add_usage(reply.usage)
                    usage.update(reply.usage)
            except _Reply as fail:
                attempts += fail.attempts
                self.stats.failures[fail.reason] += 1
                return LLMResult(
                    content="",
                    parsed=None,
                    cached=False,
                    attempts=attempts,
                    error=fail.reason,
                    detail=fail.detail,
                    usage=dict(usage),
                )
            content = reply.content
            if reply.finish_reason == "length" and _complete_json(reply, schema):
                self.stats.length_parsed += 1  # cut at the limit but its JSON is complete and valid: use it
            elif reply.finish_reason == "length":
                self.stats.failures["truncated"] += 1
                return LLMResult(
                    content=content,
                    parsed=None,
                    cached=False,
                    attempts=attempts,
                    error="truncated",
                    detail=f"finish_reason=length at max_tokens={params['max_tokens']}",
                    reasoning_content=reply.reasoning,
                    usage=dict(usage),
                    finish_reason="length",
                )
            try:
                if schema is not None:
                    parsed = parse_json_reply(content, schema)
                else:
                    parsed = None
                    if not content.strip():
                        raise ReplyError("empty_completion", "the model returned no content")
            except ReplyError as bad:
                last = bad
                if reask < self.cfg.max_reasks:
                    self.stats.reasks += 1
                    self.stats.retried_errors[bad.reason] += 1
                    conv = list(messages)
                    if content.strip():
                        conv += [
                            {"role": "assistant", "content": content},
                            {"role": "user", "content": _reask_text(bad)},
                        ]
                continue
            if self.cache is not None:
                self.cache.put(key, content, self.cfg.model, reply.reasoning)
            self.stats.succeeded += 1
            return LLMResult(
                content=content,
                parsed=parsed,
                cached=False,
                attempts=attempts,
                error=None,
                reasoning_content=reply.reasoning,
                usage=dict(usage),
                finish_reason=reply.finish_reason,
            )
        assert last is not None
        self.stats.failures[last.reason] += 1
        return LLMResult(
            content=content,
            parsed=None,
            cached=False,
            attempts=attempts,
            error=last.reason,
            detail=last.detail,
            reasoning_content=reply.reasoning,
            usage=dict(usage),
            finish_reason=reply.finish_reason,
        )

    def _pick(self, slot: int, attempt: int) -> _Endpoint:
        """The slot's home URL, the next one on each retry, skipping URLs marked down (unless all are)."""
        eps = self._endpoints
        u = len(eps)
        order = [eps[(slot + attempt + i) % u] for i in range(u)]
        now = time.monotonic()
        return next((e for e in order if e.down_until <= now), order[0])

    @staticmethod
    def _health(ep: _Endpoint, reason: str | None) -> None:
        if reason in ("connection", "timeout"):
            ep.fail_streak += 1
            if ep.fail_streak >= DOWN_AFTER_FAILURES:
                ep.down_until = time.monotonic() + DOWN_FOR_S
                log.warning("%s: %d consecutive failures, skipping it for %.0fs", ep.url, ep.fail_streak, DOWN_FOR_S)
        else:
            ep.fail_streak = 0

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cfg.retry_after_max_s) * (1.0 + 0.1 * self._rng.random())
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2**retry))
        return delay * (0.5 + self._rng.random())

    async def _send(
        self,
        slot: int,
        http: httpcore.AsyncConnectionPool,
        conv: list[dict[str, Any]],
        params: dict[str, Any],
        seed: int | None,
        schema: dict | None,
        schema_name: str | None,
    ) -> tuple[_Completion, int]:
        """POST with transport retries; returns ``(reply, attempts)`` or raises :class:`_Reply`."""
        body: dict[str, Any] = {**(self.cfg.extra_body or {}), "model": self.cfg.model, "messages": conv, **params}
        if seed is not None:
            body["seed"] = seed
        if schema is not None and self.cfg.use_response_format:
            body["response_format"] = response_format(schema, schema_name, strict=self.cfg.strict_schema)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        for attempt in range(self.cfg.max_retries + 1):
            ep = self._pick(slot, attempt)
            ep.inflight += 1
            ep.sent += 1
            self.stats.http_requests += 1
            t0 = time.perf_counter()
            try:
                reply = await self._post_once(http, ep.url, data)
                self._health(ep, None)
                return reply, attempt + 1
            except _Reply as fail:
                self._health(ep, fail.reason)
                if not fail.retryable or attempt == self.cfg.max_retries:
                    fail.attempts = attempt + 1
                    raise
                self.stats.retries += 1
                self.stats.retried_errors[fail.reason] += 1
                delay = self._backoff(attempt, fail.retry_after)
                log.debug("retry %d after %s (%s) in %.2fs", attempt + 1, fail.reason, ep.url, delay)
            finally:
                ep.inflight -= 1
                self.stats.busy_s += time.perf_counter() - t0
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post_once(self, http: httpcore.AsyncConnectionPool, url: str, data: bytes) -> _Completion:
        try:
            resp = await http.request("POST", url, headers=self._headers, content=data, extensions=self._timeouts)
        except httpcore.TimeoutException as exc:
            raise _Reply("timeout", type(exc).__name__) from None
        except httpcore.UnsupportedProtocol as exc:
            raise _Reply("bad_url", str(exc), retryable=False) from None
        except httpcore.RemoteProtocolError as exc:
            raise _Reply("connection", f"truncated or closed response: {exc}"[:300]) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            raise _Reply("connection", f"{type(exc).__name__}: {exc}"[:300]) from None
        if resp.status != 200:
            reason = f"http_{resp.status}"
            detail = resp.content[:300].decode("utf-8", "replace")
            if resp.status in RETRYABLE_STATUS or resp.status >= 500:
                retry_after = next((v.decode() for k, v in resp.headers if k.lower() == b"retry-after"), None)
                raise _Reply(reason, detail, parse_retry_after(retry_after))
            raise _Reply(reason, detail, retryable=False)
        try:
            payload = json.loads(resp.content)
            choice = payload["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning") or None
            finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _Reply("malformed_response", f"{type(exc).__name__}: {resp.content[:200]!r}") from None
        if not isinstance(content, str) or not isinstance(reasoning, (str, type(None))):
            raise _Reply("malformed_response", f"content is {type(content).__name__}")
        return _Completion(content, reasoning, finish, parse_usage(payload.get("usage"), reasoning))


def _reask_text(bad: ReplyError) -> str:
    if bad.reason == "schema_invalid":
        return f"Your reply does not match the required JSON schema ({bad.detail}). Reply again with JSON only."
    return f"Your reply is not valid JSON ({bad.detail}). Reply again with one JSON object only."


def _complete_json(reply: _Completion, schema: dict | None) -> bool:
    """Whether a (length-truncated) reply to a schema request still parses and validates: then it is used."""
    if schema is None or not reply.content.strip():
        return False
    try:
        parse_json_reply(reply.content, schema)
    except ReplyError:
        return False
    return True
