"""Client features a week-long vLLM/SGLang job needs, against the fault-injecting loopback server: token usage,
``finish_reason == "length"`` handling, ``reasoning_content``, ``extra_body`` pass-through, date-free cache keys."""

from __future__ import annotations

import pytest

from data_tools.synthesis.llm.cache import RequestCache, mask_noise, request_key
from data_tools.synthesis.llm.client import LLMClient, LLMConfig
from data_tools.synthesis.llm.fake_server import FakeLLMServer, FakeReply, prompt_words


def _cfg(url, **kw):
    base = dict(urls=[url], model="m", concurrency=4, timeout_s=5.0, max_retries=2, backoff_base_s=0.001)
    base.update(kw)
    return LLMConfig(**base)


def _msgs(i=0, date="2026-12-01"):
    return [
        {"role": "system", "content": f"You are a researcher. Current date: {date}"},
        {"role": "user", "content": f"question number {i}"},
    ]


def test_usage_is_accounted_per_request_and_in_total():
    def responder(body):
        return FakeReply(content="four word reply here", reasoning_content="think think")

    with FakeLLMServer(responder) as url:
        client = LLMClient(_cfg(url))
        results = client.run_batch([{"messages": _msgs(i)} for i in range(5)])
    prompt = prompt_words({"messages": _msgs(0)})
    for r in results:
        assert r.ok
        assert r.usage == {"prompt_tokens": prompt, "completion_tokens": 6, "reasoning_tokens": 2}
    u = client.stats.as_dict()["usage"]
    assert u == {
        "prompt_tokens": 5 * prompt,
        "completion_tokens": 30,
        "reasoning_tokens": 10,
        "total_tokens": 5 * prompt + 30,
    }


def test_reasoning_content_is_kept_and_cached(tmp_path):
    def responder(body):
        return FakeReply(content="Paris", reasoning_content="The capital of France is Paris.")

    cache = str(tmp_path / "c.sqlite")
    with FakeLLMServer(responder) as url:
        first = LLMClient(_cfg(url, cache_path=cache)).run_batch([{"messages": _msgs()}])[0]
        again_client = LLMClient(_cfg(url, cache_path=cache))
        again = again_client.run_batch([{"messages": _msgs()}])[0]
    assert first.reasoning_content == "The capital of France is Paris." and not first.cached
    assert again.cached and again.content == "Paris" and again.reasoning_content == first.reasoning_content
    assert again_client.stats.usage()["prompt_tokens"] == 0  # a cache hit spends nothing


def test_length_is_retried_once_with_a_larger_budget_then_succeeds():
    def responder(body):
        # a reply that needs more than 100 tokens: cut at the default budget
        return FakeReply(content="a long answer", finish_reason="length" if body["max_tokens"] < 100 else "stop")

    server = FakeLLMServer(responder)
    with server as url:
        client = LLMClient(_cfg(url, max_tokens=64, length_retry_factor=2.0))
        r = client.run_batch([{"messages": _msgs()}])[0]
    assert r.ok and r.content == "a long answer" and r.finish_reason == "stop"
    assert [b["max_tokens"] for b in server.requests] == [64, 128]
    assert client.stats.length_retries == 1 and not client.stats.failures


def test_length_twice_is_rejected_counted_and_not_cached(tmp_path):
    server = FakeLLMServer(lambda body: FakeReply(content="cut", finish_reason="length"))
    cache = tmp_path / "c.sqlite"
    with server as url:
        client = LLMClient(_cfg(url, max_tokens=50, cache_path=str(cache)))
        r = client.run_batch([{"messages": _msgs()}])[0]
    assert not r.ok and r.error == "truncated" and "max_tokens=100" in r.detail
    assert [b["max_tokens"] for b in server.requests] == [50, 100]
    s = client.stats.as_dict()
    assert s["truncated"] == 1 and s["failures"] == {"truncated": 1} and s["length_retries"] == 1
    assert s["usage"]["completion_tokens"] == 2  # both cut replies were paid for
    assert len(RequestCache(cache)) == 0


def test_length_fault_from_the_server_rates_is_detected():
    with FakeLLMServer(fault_rates={"length": 1.0}) as url:
        client = LLMClient(_cfg(url))
        r = client.run_batch([{"messages": _msgs()}])[0]
    assert r.error == "truncated"


def test_extra_body_is_sent_with_every_request_and_keys_the_cache(tmp_path):
    server = FakeLLMServer()
    extra = {"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20}
    cache = str(tmp_path / "c.sqlite")
    with server as url:
        client = LLMClient(_cfg(url, extra_body=extra, cache_path=cache))
        client.run_batch([{"messages": _msgs(i)} for i in range(4)])
        # another extra body is another request: no cache hit
        other = LLMClient(_cfg(url, extra_body={"top_k": 5}, cache_path=cache))
        other.run_batch([{"messages": _msgs(0)}])
    assert len(server.requests) == 5
    for body in server.requests[:4]:
        assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["top_k"] == 20
        assert body["model"] == "m" and body["temperature"] == 0.7
    assert server.requests[4]["top_k"] == 5 and other.stats.cache_hits == 0


def test_extra_body_may_not_override_what_the_client_sets():
    with pytest.raises(ValueError, match="messages"):
        LLMConfig(urls=["http://x:1/v1"], extra_body={"messages": []})


def test_cache_key_ignores_the_date_but_not_the_question(tmp_path):
    key = lambda m: request_key("m", m, {"temperature": 0.7}, 0, None)  # noqa: E731
    assert key(_msgs(1, "2026-12-01")) == key(_msgs(1, "2027-01-15"))
    assert key(_msgs(1)) != key(_msgs(2))
    assert mask_noise("Current date: 2026-12-01") == "Current date: <date>"
    assert mask_noise("born 1990-01-02") == "born 1990-01-02"  # dates in content stay
    server = FakeLLMServer()
    cache = str(tmp_path / "c.sqlite")
    with server as url:
        LLMClient(_cfg(url, cache_path=cache)).run_batch([{"messages": _msgs(0, "2026-12-01")}])
        tomorrow = LLMClient(_cfg(url, cache_path=cache))
        r = tomorrow.run_batch([{"messages": _msgs(0, "2026-12-02")}])[0]
    assert r.cached and len(server.requests) == 1
