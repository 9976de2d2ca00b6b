"""What an agent knew before step k (:class:`StepContext`: the question, the links and entities seen so far) and
the topic terms of a trajectory: the material the template strategies draw alternatives from."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.synthesis.answers import INSTRUCTION_WORDS, content_words, numbers, split_sentences
from data_tools.synthesis.has.action import CAPS_RE, LINK_RE, Action, first_search_query, keywords
from data_tools.synthesis.has.plausible import (
    query_is_natural,
)
from data_tools.synthesis.trajectory import Trajectory

# Tool-output labels and boilerplate that capitalised-span extraction must not take for entities.
_BOILERPLATE = re.compile(
    r"A Google search for '[^'\n]*' found \d+ results:|## Web Results|The useful information in \S+ for user goal"
    r"[^\n]* as follows:|Evidence in page:|Summary:|No results found for '[^'\n]*'\.|Try with a more general query\."
)
TOOL_LABELS = frozenset("summary evidence web results result google search visit page error tool sorry the no".split())


@dataclass
class StepContext:
    """What an agent knew before step k: the question and the links/entities seen so far."""

    question: str
    """The question Q."""
    links: list[tuple[str, str]]
    """``(title, url)`` pairs from earlier tool responses, in order of appearance."""
    entities: list[str]
    """Candidate entity names: link titles, then capitalized spans of the question and responses."""
    related: list[tuple[str, str]] = field(default_factory=list)
    """``(title, url)`` of corpus pages related to the question ("memory" guesses; needs a corpus)."""
    goal: str = ""
    """The ``goal`` of the most recent ``visit`` call so far (empty if none): what a visit alternative reuses."""
    goal_url: str = ""
    """The URL that :attr:`goal` was written for."""
    seen_numbers: list[str] = field(default_factory=list)
    """Numbers that appeared in earlier tool responses (distractors for numeric answers)."""
    sentences: list[str] = field(default_factory=list)
    """Sentences of earlier tool responses (labels and links removed): where phrase-like wrong answers come from."""
    answer_lengths: list[int] = field(default_factory=list)
    """Word counts of the trajectory's own final answers (wrong answers follow the policy's habit)."""
    query_lengths: list[int] = field(default_factory=list)
    """Keyword counts of the trajectory's own search queries (alternatives' queries follow the policy's habit)."""
    terms: list[str] = field(default_factory=list)
    """Topic words that are not in the question, most frequent first: words of page titles and snippets in the
    trajectory's tool responses (all of them: what a searcher of this topic could think of; an option is chosen
    before its response is shown, so no later text is revealed) and of related corpus pages. Equally long
    recombined queries draw on them when the question's own keywords are used up."""
    evidence: str = ""
    """The tool responses seen before this step (where candidate answers come from)."""
    natural: bool = True
    """Whether the trajectory's queries are natural phrasing (the original's own query decides for a search step;
    else the majority of the trajectory's queries): alternatives' queries are written in the same register."""
    final_answer: str | None = None
    """The trajectory's final answer (its *type* decides the type of premature-answer alternatives)."""
    visited: list[str] = field(default_factory=list)
    """URLs visited before this step."""
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    """Per-step cache (candidate answers by type: computed once per step, not per strategy call)."""
    last_query: str = ""
    """The latest search query before this step (else the trajectory's first): the style model of search
    alternatives at steps that are not searches."""

    def query_length(self, rng: random.Random, default: int = 6) -> int:
        """A query length (in keywords) drawn from the trajectory's own queries."""
        return rng.choice(self.query_lengths) if self.query_lengths else default

    def answer_pool(self) -> list[str]:
        """Plausible wrong answers: titles of pages seen so far, else related corpus titles or other entities."""
        return [t for t, _ in self.links] or [t for t, _ in self.related] or self.entities

    def title_of(self, url: str) -> str:
        """Title of a URL seen so far (else the URL itself)."""
        return next((t for t, u in [*self.links, *self.related] if u == url), url)

    @staticmethod
    def of(
        traj: Trajectory, k: int, related: Sequence[tuple[str, str]] = (), terms: Sequence[str] | None = None
    ) -> StepContext:
        """Context of step ``k`` (0-based): links, entities, numbers and sentences of responses R_1..R_k-1 only;
        ``terms`` (default :func:`topic_terms`) is the one trajectory-wide field."""
        seen_text = " ".join(r for s in traj.steps[:k] for r in s.responses)
        links = list(dict.fromkeys((t.strip(), u) for t, u in LINK_RE.findall(seen_text)))
        qwords = set(content_words(traj.question))
        ents = [t for t, _ in links]
        plain = _BOILERPLATE.sub(" ", LINK_RE.sub(" ", seen_text[:4000]))
        for m in CAPS_RE.finditer(traj.question + " " + plain):
            ents.append(m.group(0).strip())
        uniq = []
        for e in dict.fromkeys(ents):
            words = set(content_words(e))
            if len(e) > 2 and words and not words <= qwords and not words <= TOOL_LABELS:
                uniq.append(e)
        for title, _ in related:
            if title not in uniq and not set(content_words(title)) <= qwords:
                uniq.append(title)
        goal, goal_url, visited = "", "", []
        for s in traj.steps[:k]:
            for c in s.tool_calls:
                urls = c.arguments.get("url") if c.name == "visit" else None
                urls = [urls] if isinstance(urls, str) else [u for u in urls or [] if isinstance(u, str)]
                visited.extend(urls)
                if c.name == "visit" and isinstance(c.arguments.get("goal"), str) and c.arguments["goal"].strip():
                    goal, goal_url = c.arguments["goal"], urls[0] if urls else ""
        nums = list(dict.fromkeys(f"{x:g}" for x in numbers(plain) if abs(x) < 1e7))
        qlens = [len(keywords(q)) for q in (first_search_query(Action.from_step(s)) for s in traj.steps) if q]
        sents = [x for x in split_sentences(plain) if len(x.split()) >= 4]
        alens = [len(st.answer.split()) for st in traj.steps if st.answer]
        qlens = [n for n in qlens if n >= 2]
        own = first_search_query(Action.from_step(traj.steps[k]))
        queries = [q for q in (first_search_query(Action.from_step(s)) for s in traj.steps) if q]
        natural = query_is_natural(own) if own else (2 * sum(map(query_is_natural, queries)) >= len(queries))
        return StepContext(
            traj.question,
            links,
            uniq,
            list(related),
            goal,
            goal_url,
            nums,
            sents,
            alens,
            qlens,
            list(topic_terms(traj, related) if terms is None else terms),
            seen_text,
            natural,
            traj.prediction,
            visited,
            last_query=next(
                (q for q in (first_search_query(Action.from_step(s)) for s in reversed(traj.steps[:k])) if q), None
            )
            or (queries[0] if queries else ""),
        )


def topic_terms(traj: Trajectory, related: Sequence[tuple[str, str]] = (), limit: int = 40) -> list[str]:
    """Up to ``limit`` words related to the trajectory's topic but absent from its question, most frequent first
    (title words count three times, words of sentences sharing a question word twice): from the titles and text of all its tool responses and from ``related``
    page titles. Numbers, instruction words, tool-output labels and the words of the ground truth and of the
    final prediction are left out (an alternative never names the answer before it was found)."""
    qwords = set(content_words(" ".join([traj.question, traj.answer or "", traj.prediction or ""])))
    text = " ".join(r for s in traj.steps for r in s.responses)
    titles = [t for t, _ in LINK_RE.findall(text)] + [t for t, _ in related]
    body = _BOILERPLATE.sub(" ", LINK_RE.sub(" ", text))
    qset = qwords - INSTRUCTION_WORDS
    freq: Counter = Counter()
    for title in titles:
        for w in keywords(title):
            freq[w] += 3
    for sent in split_sentences(body):
        words = keywords(sent)
        on_topic = bool(qset.intersection(words))  # sentences that share a question word count twice as much
        for w in words:
            freq[w] += 2 if on_topic else 1
    ok = [
        w
        for w, _ in freq.most_common()
        if w not in qwords
        and w not in TOOL_LABELS
        and len(w) > 2
        and not any(ch.isdigit() for ch in w)
        and "/" not in w
    ]
    return ok[:limit]
