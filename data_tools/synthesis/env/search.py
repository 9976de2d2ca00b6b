"""Offline ``search`` / ``visit`` tools over a local corpus, answering in the DeepResearch textual shapes.

A BM25 index (``bm25s``) over title + text of every document stands in for a web search engine, and each
document's ``url`` stands in for a web page. Results are deterministic (ties broken by corpus order), so
rollouts against this environment are reproducible.

Shapes (as in Alibaba-NLP/DeepResearch ``tool_search.py`` / ``tool_visit.py``):

* ``search``: ``A Google search for '{q}' found {n} results:\\n\\n## Web Results\\n1. [{title}]({url})\\n{snippet}``
  with several queries joined by ``\\n=======\\n``;
* ``visit``: ``The useful information in {url} for user goal {goal} as follows: \\n\\nEvidence in page: \\n...
  \\n\\nSummary: \\n...\\n\\n``; evidence is the page's sentences most related to the goal (in page order),
  the summary its first sentence and description. Unknown URLs get DeepResearch's failure text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bm25s

from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.synthesis.answers import content_words, split_sentences

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import

TOOL_NAMES = ("search", "visit")
VISIT_FAILURE = (
    "Evidence in page: \nThe provided webpage content could not be accessed. Please check the URL or file format.\n\n"
    "Summary: \nThe webpage content could not be processed, and therefore, no information is available.\n\n"
)


@dataclass(frozen=True)
class Document:
    """One corpus page."""

    id: str
    """Stable document id."""
    title: str
    """Page title."""
    text: str
    """Page text."""
    url: str
    """The page's URL (what ``visit`` accepts)."""
    description: str = ""
    """Short description (Wikipedia's), used in the visit summary."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    doc: Document
    """The matching document."""
    score: float
    """BM25 score."""


@dataclass
class EnvConfig:
    """Settings of the offline tool environment."""

    top_k: int = 5
    """Results returned per search query (DeepResearch's Serper search returns 10)."""
    snippet_chars: int = 240
    """Characters of page text shown per search result."""
    evidence_sentences: int = 3
    """Sentences of a visited page quoted as evidence."""
    max_queries: int = 5
    """Queries served per ``search`` call (extra ones are ignored, as a rate-limited API would)."""
    max_urls: int = 3
    """URLs served per ``visit`` call."""
    full_pages: bool = False
    """``visit`` quotes the whole page as evidence (long rollouts for the 128K stage) instead of the
    :attr:`evidence_sentences` best sentences."""

    def __post_init__(self) -> None:
        for name in ("top_k", "snippet_chars", "evidence_sentences", "max_queries", "max_urls"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EnvConfig.{name} must be >= 1, got {getattr(self, name)}")


def _doc_from_record(rec: Mapping[str, Any], text_key: str, n: int) -> Document:
    title = str(rec.get("title") or rec.get("id") or f"doc-{n}")
    doc_id = str(rec.get("id") or f"doc-{n}")
    url = str(rec.get("url") or f"https://offline.local/{doc_id}")
    return Document(doc_id, title, str(rec[text_key]).strip(), url, str(rec.get("description") or ""))


def load_corpus(path: str | os.PathLike, text_key: str = "text") -> tuple[list[Document], int]:
    """Read corpus JSONL (``text_key`` required; ``id``, ``title``, ``url``, ``description`` optional).

    Returns ``(documents, skipped)``; lines that are not JSON objects or lack text are skipped and logged.
    """
    docs, skipped = [], 0
    for lineno, rec in iter_jsonl(path, required=[text_key], types={text_key: str}):
        if isinstance(rec, BadLine) or not rec[text_key].strip():
            skipped += 1
            log.warning("corpus %s:%d skipped: %s", path, lineno, rec if isinstance(rec, BadLine) else "empty text")
            continue
        docs.append(_doc_from_record(rec, text_key, len(docs)))
    return docs, skipped


class SearchEnvironment:
    """``search`` and ``visit`` over a fixed document collection (BM25)."""

    def __init__(self, docs: Sequence[Document], cfg: EnvConfig | None = None) -> None:
        if not docs:
            raise ValueError("the search environment needs at least one document")
        self.cfg = cfg or EnvConfig()
        self.docs = list(docs)
        self.by_url = {d.url: d for d in self.docs}
        self.by_title = {d.title.lower(): d for d in self.docs}
        corpus_tokens = bm25s.tokenize(
            [f"{d.title} {d.title} {d.text}" for d in self.docs], stopwords="en", show_progress=False
        )
        self._retriever = bm25s.BM25()
        self._retriever.index(corpus_tokens, show_progress=False)

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike, text_key: str = "text", cfg: EnvConfig | None = None
    ) -> SearchEnvironment:
        """Build from a corpus JSONL file (see :func:`load_corpus`)."""
        docs, skipped = load_corpus(path, text_key)
        if skipped:
            log.warning("corpus %s: %d lines skipped", path, skipped)
        return cls(docs, cfg)

    @classmethod
    def builtin(cls, limit: int | None = None, lang: str = "en", cfg: EnvConfig | None = None) -> SearchEnvironment:
        """Build over the built-in Wikipedia summaries (``data_tools.synthesis.corpus.wiki_summaries``)."""
        from data_tools.synthesis.corpus import wiki_summaries

        return cls([_doc_from_record(r, "text", i) for i, r in enumerate(wiki_summaries(lang, limit))], cfg)

    # ------------------------------------------------------------------------------------------ structured

    def hits(self, query: str, k: int | None = None) -> list[Hit]:
        """Top-``k`` documents for ``query`` by BM25 (score > 0 only), ties broken by corpus order."""
        k = min(k or self.cfg.top_k, len(self.docs))
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:
            return []
        idx, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        pairs = [(float(s), int(i)) for i, s in zip(idx[0], scores[0]) if s > 0]
        pairs.sort(key=lambda p: (-round(p[0], 6), p[1]))
        return [Hit(self.docs[i], s) for s, i in pairs]

    def page(self, url: str) -> Document | None:
        """The document behind ``url`` (also accepts a bare title), or None."""
        url = url.strip()
        doc = self.by_url.get(url)
        if doc is None and not url.startswith("http"):
            doc = self.by_title.get(url.lower())
        return doc

    def evidence(self, doc: Document, goal: str, n: int | None = None) -> list[str]:
        """The ``n`` sentences of ``doc`` sharing most content words with ``goal``, in page order."""
        sents = split_sentences(doc.text)
        goal_words = set(content_words(goal))
        overlap = [len(goal_words & set(content_words(s))) for s in sents]
        best = sorted(range(len(sents)), key=lambda i: (-overlap[i], i))[: n or self.cfg.evidence_sentences]
        keep = sorted(best)
        return [sents[i] for i in keep]

    # ------------------------------------------------------------------------------------------ textual

    def _snippet(self, doc: Document) -> str:
        text = doc.text
        if len(text) <= self.cfg.snippet_chars:
            return text
        cut = text.rfind(" ", 0, self.cfg.snippet_chars)
        return text[: cut if cut > 0 else self.cfg.snippet_chars] + "..."

    def search_one(self, query: str) -> str:
        """One query in DeepResearch's search result shape."""
        hits = self.hits(query)
        if not hits:
            return f"No results found for '{query}'. Try with a more general query."
        snippets = [f"{i}. [{h.doc.title}]({h.doc.url})\n{self._snippet(h.doc)}" for i, h in enumerate(hits, 1)]
        return f"A Google search for '{query}' found {len(hits)} results:\n\n## Web Results\n" + "\n\n".join(snippets)

    def search(self, query: str | Iterable[str]) -> str:
        """``search{query: [str]}``: results per query joined by ``\\n=======\\n``."""
        queries = [query] if isinstance(query, str) else [str(q) for q in query]
        queries = [q for q in queries if q.strip()][: self.cfg.max_queries]
        if not queries:
            return "[Search] Invalid request format: Input must be a JSON object containing 'query' field"
        return "\n=======\n".join(self.search_one(q) for q in queries)

    def visit_one(self, url: str, goal: str) -> str:
        """One page in DeepResearch's visit result shape."""
        head = f"The useful information in {url} for user goal {goal} as follows: \n\n"
        doc = self.page(url)
        if doc is None:
            return head + VISIT_FAILURE
        evidence = doc.text if self.cfg.full_pages else " ".join(self.evidence(doc, goal))
        first = (split_sentences(doc.text) or [doc.text])[0]
        summary = f"{doc.title}" + (f" ({doc.description})" if doc.description else "") + f": {first}"
        return head + f"Evidence in page: \n{evidence}\n\nSummary: \n{summary}\n\n"

    def visit(self, url: str | Iterable[str], goal: str = "") -> str:
        """``visit{url: [str], goal: str}``: pages joined by ``\\n=======\\n``."""
        urls = [url] if isinstance(url, str) else [str(u) for u in url]
        urls = [u for u in urls if u.strip()][: self.cfg.max_urls]
        if not urls:
            return "[Visit] Invalid request format: Input must be a JSON object containing 'url' field"
        return "\n=======\n".join(self.visit_one(u, goal) for u in urls)

    def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Dispatch a tool call by name; unknown tools and bad arguments get an error text, as in DeepResearch."""
        if name == "search":
            if "query" not in arguments:
                return "[Search] Invalid request format: Input must be a JSON object containing 'query' field"
            return self.search(arguments["query"])
        if name == "visit":
            if "url" not in arguments:
                return "[Visit] Invalid request format: Input must be a JSON object containing 'url' field"
            return self.visit(arguments["url"], str(arguments.get("goal", "")))
        return f"Error: Tool {name} not found"


def memory_documents(path: str | os.PathLike) -> tuple[list[Document], int]:
    """Documents from a FAS knowledge-memory JSONL (``data memory`` output): one per entity, its statements as text.

    Returns ``(documents, skipped)``; items without an entity or statements are skipped.
    """
    docs, skipped = [], 0
    for lineno, rec in iter_jsonl(path, required=["entity", "statements"], types={"statements": list}):
        texts = (
            [] if isinstance(rec, BadLine) else [st.get("text", "") for st in rec["statements"] if isinstance(st, dict)]
        )
        if isinstance(rec, BadLine) or not any(t.strip() for t in texts):
            skipped += 1
            log.warning("memory %s:%d skipped: %s", path, lineno, rec if isinstance(rec, BadLine) else "no statements")
            continue
        source = next((st.get("source") or {} for st in rec["statements"] if isinstance(st, dict)), {})
        doc_id = str(rec.get("id") or f"mem-{lineno}")
        url = str(source.get("url") or f"https://offline.local/{doc_id}")
        docs.append(Document(doc_id, str(rec["entity"]), " ".join(t.strip() for t in texts if t.strip()), url,
                             str(rec.get("description") or "")))  # fmt: skip
    return docs, skipped


def load_documents(spec: str, text_key: str = "text") -> list[Document]:
    """``builtin`` / ``builtin:N`` (the Wikipedia summaries, optionally the first N) or a corpus JSONL path."""
    if spec == "builtin" or spec.startswith("builtin:"):
        from data_tools.synthesis.corpus import wiki_summaries

        limit = int(spec.split(":", 1)[1]) if ":" in spec else None
        return [_doc_from_record(r, "text", i) for i, r in enumerate(wiki_summaries("en", limit))]
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"corpus {spec} does not exist")
    docs, skipped = load_corpus(spec, text_key)
    if skipped:
        log.warning("corpus %s: %d lines skipped", spec, skipped)
    return docs


def load_environment(spec: str, text_key: str = "text", cfg: EnvConfig | None = None) -> SearchEnvironment:
    """A :class:`SearchEnvironment` over :func:`load_documents` ``(spec, text_key)``."""
    return SearchEnvironment(load_documents(spec, text_key), cfg)
