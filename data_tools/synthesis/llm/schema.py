"""Parsing model replies as JSON and validating them against a JSON schema (structured outputs)."""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


class ReplyError(ValueError):
    """A reply that is not valid JSON or does not match the schema; ``reason`` is a short category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def schema_hash(schema: dict) -> str:
    """Short stable hash of a schema (used to cache validators)."""
    return hashlib.sha1(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=256)
def _validator(key: str, schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def validator_for(schema: dict) -> jsonschema.protocols.Validator:
    """Return a cached validator for ``schema`` (raises ``jsonschema.SchemaError`` for an invalid schema)."""
    text = json.dumps(schema, sort_keys=True)
    return _validator(schema_hash(schema), text)


def parse_json_reply(content: str, schema: dict | None) -> Any:
    """Parse ``content`` as JSON (tolerating a leading ``<think>`` block and a code fence) and validate it.

    Raises :class:`ReplyError` with reason ``empty_completion``, ``invalid_json`` or ``schema_invalid``.
    """
    text = _THINK.sub("", content or "", count=1).strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    if not text:
        raise ReplyError("empty_completion", "the model returned no content")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplyError("invalid_json", f"{exc.msg} at char {exc.pos}") from None
    if schema is not None:
        errors = sorted(validator_for(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            raise ReplyError("schema_invalid", f"{where}: {e.message}"[:500])
    return obj


def response_format(schema: dict, name: str | None = None, strict: bool = False) -> dict:
    """The OpenAI ``response_format`` for structured outputs (accepted by vLLM and SGLang too)."""
    title = name or schema.get("title") or "response"
    title = re.sub(r"[^A-Za-z0-9_-]", "_", str(title))[:64]
    return {"type": "json_schema", "json_schema": {"name": title, "schema": schema, "strict": strict}}
