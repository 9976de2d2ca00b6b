"""Versioned prompt templates stored as files under ``data_tools/synthesis/templates/<family>/<version>/``.

A template ``NAME.txt`` holds chat messages as sections introduced by a line ``=== system ===``,
``=== user ===`` or ``=== assistant ===``; text before the first section (e.g. a header comment) is ignored.
Placeholders use :class:`string.Template` syntax (``$entity``, ``${statements}``); list and dict values are
inserted as indented JSON. An optional ``NAME.schema.json`` next to it is the JSON schema of the reply, sent as
``response_format`` and used to validate it. Every record produced with a template stores its
:attr:`PromptTemplate.tag` (family/name@version) and :attr:`PromptTemplate.digest` (hash of the files), so a
template edit is visible in the provenance (and changes the request-cache keys).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATE_ROOT = Path(__file__).resolve().parent.parent / "templates"
_SECTION = re.compile(r"^=== (system|user|assistant) ===[ \t]*$", re.M)


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt template with its optional reply schema."""

    family: str
    """Template family (``fas``, ``has``, ``memory``...)."""
    name: str
    """Template name inside the family."""
    version: str
    """Version directory (``v1``...)."""
    messages: tuple[tuple[str, str], ...]
    """``(role, text)`` sections with placeholders."""
    schema: dict | None
    """JSON schema of the reply, if the template has one."""
    digest: str
    """Short SHA-256 of the template and schema files."""

    @property
    def tag(self) -> str:
        """``family/name@version``, recorded in provenance."""
        return f"{self.family}/{self.name}@{self.version}"

    def render(self, **values: Any) -> list[dict[str, str]]:
        """Substitute ``values`` and return OpenAI chat messages; a missing placeholder raises ``KeyError``."""
        subst = {k: _fmt(v) for k, v in values.items()}
        out = []
        for role, text in self.messages:
            try:
                out.append({"role": role, "content": string.Template(text).substitute(subst)})
            except KeyError as exc:
                raise KeyError(f"template {self.tag} needs a value for {exc.args[0]!r}") from None
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2)


def parse_template_text(text: str) -> tuple[tuple[str, str], ...]:
    """Split template text into ``(role, text)`` sections."""
    parts = _SECTION.split(text)
    sections = []
    for i in range(1, len(parts) - 1, 2):
        sections.append((parts[i], parts[i + 1].strip("\n")))
    if not sections:
        raise ValueError("template has no '=== system|user|assistant ===' section")
    return tuple(sections)


@lru_cache(maxsize=128)
def load_prompt(family: str, name: str, version: str = "v1", root: str | None = None) -> PromptTemplate:
    """Load ``<root>/<family>/<version>/<name>.txt`` (and ``<name>.schema.json`` if present)."""
    base = Path(root) if root else TEMPLATE_ROOT
    path = base / family / version / f"{name}.txt"
    if not path.exists():
        raise FileNotFoundError(f"prompt template {family}/{name}@{version} not found at {path}")
    text = path.read_text(encoding="utf-8")
    h = hashlib.sha256(text.encode())
    schema_path = path.with_name(f"{name}.schema.json")
    schema = None
    if schema_path.exists():
        raw = schema_path.read_text(encoding="utf-8")
        h.update(raw.encode())
        try:
            schema = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{schema_path}: invalid JSON schema file: {exc}") from None
    try:
        messages = parse_template_text(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return PromptTemplate(family, name, version, messages, schema, h.hexdigest()[:12])
