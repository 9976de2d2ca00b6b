"""A real loopback OpenAI-compatible server for tests and benchmarks, with scripted answers and injected faults.

``FakeLLMServer`` serves ``POST /v1/chat/completions`` (HTTP/1.1 keep-alive, one thread per connection) from a
thread of the calling process, or as a separate process with ``python -m data_tools.synthesis.llm.fake_server``. Replies
come from a *responder* callback ``responder(body: dict) -> str | dict | FakeReply``; the default responder
answers a JSON-schema request with a minimal instance of the schema and any other request with a fixed text.

Faults (``FakeReply(fault=...)`` or random with ``fault_rates``): ``http_500``, ``http_503`` and ``http_429``
(with ``Retry-After``), ``http_400`` (not retryable), ``timeout`` (the server hangs), ``reset`` (TCP RST), ``malformed`` (a 200 whose body is
not JSON), ``truncated`` (the body is cut and the connection closed), ``empty`` (an empty completion) and
``bad_json`` (completion text that is not JSON), and ``length`` (a reply cut by the token limit:
``finish_reason == "length"``).

Every reply carries an OpenAI ``usage`` object counted in whitespace words (prompt: the messages' texts;
completion: content + reasoning; ``completion_tokens_details.reasoning_tokens``: the reasoning), and a scripted
``FakeReply(reasoning_content=...)`` is sent as ``message.reasoning_content`` like vLLM's reasoning parsers do.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = (
    "http_400",
    "http_500",
    "http_503",
    "http_429",
    "timeout",
    "reset",
    "malformed",
    "truncated",
    "empty",
    "bad_json",
    "length",
)


@dataclass
class FakeReply:
    """A scripted reply: content (text or a JSON-able object), or a fault."""

    content: str | dict | list | None = None
    """Completion text; a dict/list is sent as its JSON text."""
    fault: str | None = None
    """One of :data:`FAULTS`, or ``None`` for a normal reply."""
    retry_after: float | None = None
    """``Retry-After`` seconds sent with ``http_429``/``http_503``."""
    delay_s: float | None = None
    """Latency for this reply (overrides the server's)."""
    reasoning_content: str | None = None
    """Sent as ``message.reasoning_content`` (a reasoning parser's separate thinking)."""
    finish_reason: str = "stop"
    """``finish_reason`` of the choice (``length`` = cut by the token limit)."""


Responder = Callable[[dict[str, Any]], "str | dict | list | FakeReply"]


def schema_instance(schema: dict, seed: str = "") -> Any:
    """A small deterministic instance of a (simple) JSON schema: objects, arrays, strings, numbers, enums."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return schema_instance(schema[key][0], seed)
    t = schema.get("type", "object")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        props = schema.get("properties", {})
        return {k: schema_instance(v, seed + k) for k, v in props.items() if k in schema.get("required", props)}
    if t == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [schema_instance(schema.get("items", {"type": "string"}), f"{seed}{i}") for i in range(n)]
    if t == "string":
        text = "text-" + hashlib.sha1(seed.encode()).hexdigest()[:8]
        return text.ljust(int(schema.get("minLength", 0)), "x")
    if t == "integer":
        return int(schema.get("minimum", 0))
    if t == "number":
        return float(schema.get("minimum", 0.0))
    if t == "boolean":
        return True
    return None


def default_responder(body: dict[str, Any]) -> str | dict | list:
    """Answer schema requests with :func:`schema_instance`, others with a short deterministic text."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return schema_instance(fmt["json_schema"]["schema"])
    last = body.get("messages", [{}])[-1].get("content", "")
    return "ok " + hashlib.sha1(str(last).encode()).hexdigest()[:8]


def prompt_words(body: dict[str, Any]) -> int:
    """The fake tokenizer: whitespace words over the request's message texts."""
    return sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])


def completion_body(
    model: str,
    content: str,
    finish_reason: str = "stop",
    *,
    reasoning: str | None = None,
    prompt_tokens: int = 0,
) -> dict[str, Any]:
    """An OpenAI chat-completion response object (usage counted in whitespace words)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    r = len(reasoning.split()) if reasoning else 0
    completion = len(content.split()) + r
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": r},
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        owner = self.server.owner
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": "not found"}')
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, b'{"error": "request body is not JSON"}')
            return
        reply = owner._reply_for(body)
        delay = owner.latency_s if reply.delay_s is None else reply.delay_s
        owner._enter()
        try:
            if delay > 0:
                owner._stop.wait(delay)
        finally:
            owner._leave()
        fault = reply.fault
        owner._count(fault or "ok")
        model = body.get("model", "fake")
        if fault in ("http_400", "http_500", "http_503", "http_429"):
            code = int(fault[5:])
            headers = {}
            if code in (429, 503):
                headers["Retry-After"] = str(reply.retry_after if reply.retry_after is not None else owner.retry_after)
            self._send(code, json.dumps({"error": {"message": f"injected {fault}"}}).encode(), headers)
        elif fault == "timeout":
            owner._stop.wait(owner.hang_s)
            self.close_connection = True
        elif fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif fault == "malformed":
            self._send(200, b"<html>502 Bad Gateway</html> {not json")
        elif fault == "truncated":
            payload = json.dumps(completion_body(model, "a reply that will be cut")).encode()
            self._send(200, payload[: len(payload) // 2], length=len(payload))
            self.close_connection = True
        else:
            if fault == "empty":
                content = ""
            elif fault == "bad_json":
                content = '{"answer": "unterminated'
            elif isinstance(reply.content, str):
                content = reply.content
            else:
                content = json.dumps(reply.content, ensure_ascii=False)
            finish = reply.finish_reason
            if fault == "length":
                content, finish = content[: max(1, len(content) // 2)], "length"
            out = completion_body(
                model, content, finish, reasoning=reply.reasoning_content, prompt_tokens=prompt_words(body)
            )
            self._send(200, json.dumps(out, ensure_ascii=False).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    owner: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return  # clients that go away (killed jobs, timeouts) are part of the scripts
        super().handle_error(request, client_address)


class FakeLLMServer:
    """Loopback OpenAI-compatible server; ``with FakeLLMServer(...) as base_url:`` gives ``http://127.0.0.1:P/v1``.

    ``responder`` scripts the answers (see the module docstring); ``latency_s`` delays every reply;
    ``fault_rates`` maps fault names to probabilities drawn per request with a seeded RNG; ``retry_after`` is
    the default ``Retry-After``; ``hang_s`` is how long a ``timeout`` fault hangs. :attr:`requests` keeps every
    request body received, :attr:`counts` the replies by kind and :attr:`max_inflight` the peak concurrency.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        fault_rates: dict[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 0.05,
        hang_s: float = 30.0,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_requests: bool = True,
    ) -> None:
        for name in fault_rates or {}:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; choose from {FAULTS}")
        self.responder = responder or default_responder
        self.latency_s = latency_s
        self.fault_rates = dict(fault_rates or {})
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.keep_requests = keep_requests
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter = Counter()
        self.inflight = 0
        self.max_inflight = 0
        """Most requests seen waiting out their latency at the same time."""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _enter(self) -> None:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def _leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _reply_for(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            if self.keep_requests:
                self.requests.append(body)
            draw = self._rng.random() if self.fault_rates else 1.0
        acc = 0.0
        for name, rate in self.fault_rates.items():
            acc += rate
            if draw < acc:
                if name != "length":
                    return FakeReply(fault=name)
                out = self.responder(body)
                reply = out if isinstance(out, FakeReply) else FakeReply(content=out)
                reply.fault = "length"
                return reply
        out = self.responder(body)
        return out if isinstance(out, FakeReply) else FakeReply(content=out)

    def start(self) -> FakeLLMServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release hanging ``timeout`` replies."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> str:
        self.start()
        return self.base_url

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FailFirst:
    """Responder wrapper: the first ``n`` requests for each distinct prompt get ``fault``, then ``inner``.

    A prompt is identified by its messages up to and including the first user message, so a re-ask (which
    appends turns) counts as another request for the same prompt.
    """

    def __init__(self, fault: str, n: int = 1, inner: Responder | None = None, retry_after: float | None = None):
        self.fault, self.n, self.inner, self.retry_after = fault, n, inner or default_responder, retry_after
        self._seen: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str | dict | list | FakeReply:
        msgs = body.get("messages") or []
        upto = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), len(msgs) - 1)
        key = json.dumps(msgs[: upto + 1], sort_keys=True)
        with self._lock:
            self._seen[key] += 1
            k = self._seen[key]
        if k <= self.n:
            return FakeReply(fault=self.fault, retry_after=self.retry_after)
        return self.inner(body)


def main(argv: list[str] | None = None) -> int:
    """Run the fake server in the foreground (prints its base URL on the first line of stdout)."""
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.synthesis.llm.fake_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per reply")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=RATE", help="random fault rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--responder",
        default=None,
        metavar="MODULE:CALLABLE",
        help="responder factory, e.g. data_tools.synthesis.fas.scripted:FasResponder (default: schema instances)",
    )
    args = parser.parse_args(argv)
    rates = {k: float(v) for k, v in (f.split("=", 1) for f in args.fault)}
    responder = None
    if args.responder:
        module, _, attr = args.responder.partition(":")
        responder = getattr(importlib.import_module(module), attr)()
    server = FakeLLMServer(
        responder,
        latency_s=args.latency,
        fault_rates=rates,
        seed=args.seed,
        host=args.host,
        port=args.port,
        keep_requests=False,
    )
    print(server.base_url, flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
