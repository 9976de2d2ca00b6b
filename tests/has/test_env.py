"""Offline search environment: BM25 ranking against a from-scratch reference, DeepResearch result shapes."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

from bm25s.stopwords import STOPWORDS_EN

from data_tools.synthesis.env.search import VISIT_FAILURE, Document, EnvConfig, SearchEnvironment

DOCS = [
    Document(
        "d0", "Paris", "Paris is the capital and largest city of France. It hosts the Louvre museum.", "https://x/Paris"
    ),
    Document("d1", "Lyon", "Lyon is a city in France known for cuisine. Lyon lies on the Rhone.", "https://x/Lyon"),
    Document("d2", "Berlin", "Berlin is the capital of Germany. It has a famous wall.", "https://x/Berlin"),
    Document("d3", "Louvre", "The Louvre is the world's most-visited museum, located in Paris.", "https://x/Louvre"),
    Document("d4", "Rhone", "The Rhone is a river rising in the Alps and flowing through France.", "https://x/Rhone"),
    Document(
        "d5",
        "Danube",
        "The Danube is a river in Central Europe flowing through Germany and Austria.",
        "https://x/Danube",
    ),
]


def ref_bm25(docs, query, k1=1.5, b=0.75):
    """Lucene (>= 8) BM25 written from the formula, independently of bm25s:
    idf = ln(1 + (N - df + .5) / (df + .5)), term score = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))."""

    def toks(text):
        return [w for w in re.findall(r"(?u)\b\w\w+\b", text.lower()) if w not in STOPWORDS_EN]

    corpus = [toks(f"{d.title} {d.title} {d.text}") for d in docs]
    n, avgdl = len(corpus), sum(map(len, corpus)) / len(corpus)
    df = Counter(w for doc in corpus for w in set(doc))
    scores = []
    for doc in corpus:
        tf = Counter(doc)
        s = 0.0
        for w in toks(query):
            if tf[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] / (tf[w] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(s)
    return scores


def test_ranking_matches_reference_bm25():
    env = SearchEnvironment(DOCS, EnvConfig(top_k=6))
    for query in ["capital of France", "river flowing through Germany", "Louvre museum Paris", "Rhone river Lyon"]:
        ref = ref_bm25(DOCS, query)
        want = sorted((i for i, s in enumerate(ref) if s > 0), key=lambda i: (-ref[i], i))
        hits = env.hits(query)
        assert [h.doc.id for h in hits] == [DOCS[i].id for i in want], query
        for h, i in zip(hits, want):
            assert math.isclose(h.score, ref[i], rel_tol=1e-4)
    assert env.hits("zzzz qqqq") == []


def test_search_text_shape():
    env = SearchEnvironment(DOCS, EnvConfig(top_k=2, snippet_chars=40))
    text = env.search(["capital of France", "unknownword"])
    first, second = text.split("\n=======\n")
    assert first.startswith(
        "A Google search for 'capital of France' found 2 results:\n\n## Web Results\n1. [Paris](https://x/Paris)\n"
    )
    assert re.search(r"^2\. \[\w+\]\(https://x/\w+\)$", first, re.M)
    assert first.split("\n")[4] == "Paris is the capital and largest city..."  # cut at a word boundary
    assert second == "No results found for 'unknownword'. Try with a more general query."
    assert env.call("search", {}).startswith("[Search] Invalid request format")
    assert env.call("calculator", {"x": 1}) == "Error: Tool calculator not found"


def test_visit_text_shape_and_evidence():
    env = SearchEnvironment(DOCS, EnvConfig(evidence_sentences=1))
    text = env.visit(["https://x/Lyon"], goal="Lyon lies on which river?")
    assert text.startswith(
        "The useful information in https://x/Lyon for user goal Lyon lies on which river? as follows: \n\n"
    )
    assert (
        "Evidence in page: \nLyon lies on the Rhone.\n\nSummary: \nLyon: Lyon is a city in France known for cuisine.\n\n"
        in text
    )
    missing = env.visit("https://x/Nowhere", goal="g")
    assert missing.endswith(VISIT_FAILURE)
    assert env.visit("Berlin", "wall").startswith("The useful information in Berlin")  # bare titles resolve too
    assert "Evidence in page: \nIt has a famous wall." in env.visit("Berlin", "wall")


def test_builtin_corpus_env(small_env):
    assert len(small_env.docs) == 600
    top = small_env.hits(small_env.docs[17].title)[0]
    assert top.doc.title == small_env.docs[17].title  # a page is found by its own title


def test_memory_documents(tmp_path):
    from data_tools.synthesis.env.search import memory_documents

    src = {"doc_id": "w1", "title": "Lyon", "url": "https://en.wikipedia.org/wiki/Lyon"}
    lines = [
        {
            "id": "mem-1",
            "entity": "Lyon",
            "description": "city",
            "statements": [{"text": "Lyon is in France.", "source": src}, {"text": "It lies on the Rhone."}],
        },
        {"id": "mem-2", "entity": "Empty", "statements": []},
        {"entity": "NoStatements"},
    ]
    path = tmp_path / "memory.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    docs, skipped = memory_documents(path)
    assert skipped == 2
    assert docs == [Document("mem-1", "Lyon", "Lyon is in France. It lies on the Rhone.", src["url"], "city")]
    assert SearchEnvironment(docs).hits("Rhone")[0].doc.title == "Lyon"
