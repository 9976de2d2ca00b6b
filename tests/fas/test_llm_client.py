"""The LLM client against a real loopback HTTP server: faults, retries, re-asks, cache, concurrency, spreading."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest

from data_tools.synthesis.llm.client import (
    DOWN_AFTER_FAILURES,
    LLMClient,
    LLMConfig,
    chat_completions_url,
    parse_retry_after,
)
from data_tools.synthesis.llm.fake_server import FailFirst, FakeLLMServer, FakeReply, default_responder

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1}, "n": {"type": "integer"}},
    "required": ["answer", "n"],
    "additionalProperties": False,
}


def _cfg(url, **kw):
    base = dict(
        urls=[url] if isinstance(url, str) else url,
        model="m",
        concurrency=8,
        timeout_s=5.0,
        max_retries=3,
        backoff_base_s=0.001,
        backoff_max_s=0.01,
    )
    base.update(kw)
    return LLMConfig(**base)


def _msgs(i=0):
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": f"question {i}"}]


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("http_500", "http_500"),
        ("http_503", "http_503"),
        ("http_429", "http_429"),
        ("reset", "connection"),
        ("malformed", "malformed_response"),
        ("truncated", "connection"),
    ],
)
def test_transport_faults_are_retried_then_succeed(fault, reason):
    with FakeLLMServer(FailFirst(fault, n=2), retry_after=0.01) as url:
        client = LLMClient(_cfg(url))
        res = client.run_batch([{"messages": _msgs(i), "schema": SCHEMA} for i in range(3)])
    assert all(r.ok for r in res), [r.error for r in res]
    assert [r.attempts for r in res] == [3, 3, 3]
    assert all(r.parsed == json.loads(r.content) for r in res)
    assert client.stats.retries == 6 and client.stats.retried_errors[reason] == 6
    assert client.stats.failures == {}


def test_timeout_is_retried():
    server = FakeLLMServer(FailFirst("timeout", n=1), hang_s=5.0)
    with server as url:
        client = LLMClient(_cfg(url, timeout_s=1.0))
        (res,) = client.run_batch([{"messages": _msgs()}])
    assert res.ok and res.attempts == 2
    assert client.stats.retried_errors["timeout"] == 1


def test_persistent_fault_is_reported_not_raised():
    with FakeLLMServer(lambda body: FakeReply(fault="http_500")) as url:
        client = LLMClient(_cfg(url, max_retries=2))
        (res,) = client.run_batch([{"messages": _msgs(), "schema": SCHEMA}])
    assert not res.ok and res.error == "http_500" and res.attempts == 3 and res.parsed is None
    assert client.stats.failures == {"http_500": 1}
    assert client.stats.as_dict()["failed"] == 1


def test_client_error_is_not_retried():
    server = FakeLLMServer(lambda body: FakeReply(fault="http_400"))
    with server as url:
        client = LLMClient(_cfg(url))
        (res,) = client.run_batch([{"messages": _msgs()}])
    assert res.error == "http_400" and res.attempts == 1 and server.counts["http_400"] == 1


def test_retry_after_is_honoured():
    delays: list[float] = []

    async def fake_sleep(s):
        delays.append(s)

    with FakeLLMServer(FailFirst("http_429", n=1, retry_after=7)) as url:
        client = LLMClient(_cfg(url, backoff_base_s=0.001))
        client._sleep = fake_sleep
        (res,) = client.run_batch([{"messages": _msgs()}])
    assert res.ok and len(delays) == 1
    assert 7.0 <= delays[0] <= 7.0 * 1.1 + 1e-9


def test_exponential_backoff_with_jitter_is_bounded():
    delays: list[float] = []

    async def fake_sleep(s):
        delays.append(s)

    with FakeLLMServer(FailFirst("http_500", n=4)) as url:
        client = LLMClient(_cfg(url, max_retries=5, backoff_base_s=0.1, backoff_max_s=0.4))
        client._sleep = fake_sleep
        (res,) = client.run_batch([{"messages": _msgs()}])
    assert res.ok and len(delays) == 4
    nominal = [0.1, 0.2, 0.4, 0.4]
    for d, n in zip(delays, nominal):
        assert 0.5 * n <= d <= 1.5 * n


@pytest.mark.parametrize("fault, reason", [("empty", "empty_completion"), ("bad_json", "invalid_json")])
def test_bad_content_is_reasked(fault, reason):
    server = FakeLLMServer(FailFirst(fault, n=1))
    with server as url:
        client = LLMClient(_cfg(url))
        (res,) = client.run_batch([{"messages": _msgs(), "schema": SCHEMA, "seed": 5}])
    assert res.ok and res.parsed["n"] == 0
    assert client.stats.reasks == 1 and client.stats.retried_errors[reason] == 1
    # the re-ask changes the seed so a deterministic server does not repeat itself
    assert server.requests[0]["seed"] == 5 and server.requests[1]["seed"] != 5


def test_schema_invalid_reply_is_reasked_with_the_error_then_fails():
    bad = {"answer": "", "n": "three"}
    server = FakeLLMServer(lambda body: bad)
    with server as url:
        client = LLMClient(_cfg(url, max_reasks=2))
        (res,) = client.run_batch([{"messages": _msgs(), "schema": SCHEMA}])
    assert res.error == "schema_invalid" and res.parsed is None and res.attempts == 3
    assert len(server.requests) == 3
    reask = server.requests[1]["messages"]
    assert reask[:2] == _msgs() and reask[2] == {"role": "assistant", "content": json.dumps(bad)}
    assert "schema" in reask[3]["content"] and reask[3]["role"] == "user"
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == SCHEMA


def test_schema_reply_in_think_block_and_fence_is_accepted():
    reply = '<think>let me see</think>\n```json\n{"answer": "x", "n": 2}\n```'
    with FakeLLMServer(lambda body: reply) as url:
        client = LLMClient(_cfg(url))
        (res,) = client.run_batch([{"messages": _msgs(), "schema": SCHEMA}])
    assert res.ok and res.parsed == {"answer": "x", "n": 2}


def test_cache_makes_reruns_free(tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    reqs = [{"messages": _msgs(i), "schema": SCHEMA, "seed": i, "temperature": 0.3} for i in range(10)]
    server = FakeLLMServer()
    with server as url:
        first = LLMClient(_cfg(url, cache_path=cache)).run_batch(reqs)
        n_after_first = len(server.requests)
        client = LLMClient(_cfg(url, cache_path=cache))
        again = client.run_batch(reqs)
        # a different seed or sampling parameter is a different request
        other = client.run_batch([{**reqs[0], "seed": 99}, {**reqs[1], "temperature": 0.9}])
    assert n_after_first == 10 and len(server.requests) == 12
    assert [r.content for r in again] == [r.content for r in first]
    assert all(r.cached and r.attempts == 0 for r in again) and not any(r.cached for r in first)
    assert client.stats.cache_hits == 10 and not any(r.cached for r in other)


def test_failures_are_not_cached(tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    with FakeLLMServer(lambda body: FakeReply(fault="http_500")) as url:
        (bad,) = LLMClient(_cfg(url, cache_path=cache, max_retries=0)).run_batch([{"messages": _msgs()}])
    with FakeLLMServer() as url:
        (good,) = LLMClient(_cfg(url, cache_path=cache)).run_batch([{"messages": _msgs()}])
    assert bad.error == "http_500" and good.ok and not good.cached


def test_concurrency_is_bounded_and_reached():
    server = FakeLLMServer(latency_s=0.3)
    with server as url:
        client = LLMClient(_cfg(url, concurrency=6))
        res = client.run_batch([{"messages": _msgs(i)} for i in range(18)])
    assert all(r.ok for r in res)
    assert server.max_inflight == 6


def test_load_is_spread_and_a_dead_url_is_avoided():
    s1, s2 = FakeLLMServer(latency_s=0.02), FakeLLMServer(latency_s=0.02)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    dead.close()
    with s1 as u1, s2 as u2:
        client = LLMClient(_cfg([u1, u2], concurrency=8))
        assert all(r.ok for r in client.run_batch([{"messages": _msgs(i)} for i in range(40)]))
        n1, n2 = len(s1.requests), len(s2.requests)
        client2 = LLMClient(_cfg([dead_url, u1], concurrency=4))
        res = client2.run_batch([{"messages": _msgs(i)} for i in range(40)])
    assert n1 + n2 == 40 and min(n1, n2) >= 12
    # half the slots live on the dead URL: every request still succeeds, and once the URL has failed
    # DOWN_AFTER_FAILURES times in a row it is skipped instead of costing every other request a failed attempt
    assert all(r.ok for r in res)
    assert DOWN_AFTER_FAILURES <= client2.stats.retried_errors["connection"] <= DOWN_AFTER_FAILURES + 4


def test_random_faults_all_accounted():
    server = FakeLLMServer(fault_rates={"http_500": 0.15, "http_429": 0.1, "empty": 0.1, "malformed": 0.1}, seed=3)
    with server as url:
        client = LLMClient(_cfg(url, max_retries=1, max_reasks=1))
        res = client.run_batch([{"messages": _msgs(i), "schema": SCHEMA} for i in range(60)])
    st = client.stats
    assert st.requests == 60 and st.succeeded + sum(st.failures.values()) == 60
    assert sum(1 for r in res if r.ok) == st.succeeded and st.succeeded > 30
    assert st.http_requests == len(server.requests) == sum(server.counts.values())
    assert st.retries + st.reasks == sum(st.retried_errors.values())


def test_async_chat_inside_running_loop():
    async def go(url):
        async with LLMClient(_cfg(url)) as client:
            return await asyncio.gather(*(client.chat(_msgs(i), seed=i, max_tokens=7) for i in range(4)))

    server = FakeLLMServer()
    with server as url:
        res = asyncio.run(go(url))
    assert [r.content for r in res] == [default_responder(b) for b in sorted(server.requests, key=lambda b: b["seed"])]
    assert {b["max_tokens"] for b in server.requests} == {7}


def test_config_validation_and_helpers():
    with pytest.raises(ValueError):
        LLMConfig(urls=["ftp://x"])
    with pytest.raises(ValueError):
        LLMConfig(urls=["http://x"], concurrency=0)
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert threading.active_count() >= 1
