"""A scripted, offline ReAct policy for the search environment (no model needed).

It behaves like a plain search agent: search (the keywords of the question, or of a quoted sentence with a
blank ``___`` in it), open a result, check whether the page fills the blank, try the next result or a refined
search when it does not, and answer: the blank's filler, a year difference for "how many years" questions,
or the page title for "which subject" questions. ``Open the page "X"`` questions start by visiting X. Its
choices (which result to open first, whether to double-check) come from a RNG seeded per question, so rollouts
are reproducible, and its mistakes make a realistic mix of correct and incorrect trajectories. Every turn is
DeepResearch assistant text, parsed by the same code that reads model output.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from data_tools.synthesis.answers import INSTRUCTION_WORDS, content_words, split_sentences
from data_tools.synthesis.env.goals import goal_for
from data_tools.synthesis.env.search import Document, SearchEnvironment
from data_tools.synthesis.serialize import render_action

_MASKED = re.compile(r'"([^"]*___[^"]*)"')
_OPEN_PAGE = re.compile(r'\bOpen the page "([^"]+)"')
_COMPARE = re.compile(r"^\s*Comparing (.+?) and (.+?), which one comes with the (later|earlier) date", re.I)
_BETWEEN = re.compile(r"^\s*how many years passed between", re.I)
_BEFORE = re.compile(r"^\s*how many years before (\d{3,4})", re.I)
_NUMERIC = re.compile(r"^\s*(how (many|much|long|old|tall|far)|when|in what year|what year)\b", re.I)
_REPORT = re.compile(r"^\s*(write|summari[sz]e|describe|explain|compare|give an overview|report|discuss)\b", re.I)
_YEAR = re.compile(r"\b(\d{3,4})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
# Question scaffolding / instruction words that carry no information about the subject (shared with HAS).
_SCAFFOLD = INSTRUCTION_WORDS


def fill_blank(masked: str, text: str) -> str | None:
    """The words of ``text`` that fill the ``___`` of ``masked`` (matched on the context around the blank)."""
    left, _, right = masked.partition("___")
    left, right = left[-40:].lstrip(), right[:25].rstrip()
    if not left.strip() and not right.strip():
        return None
    pattern = re.escape(left) + r"(.{1,80}?)" + (re.escape(right) if right.strip() else r"(?=[.,;:]|$)")
    for sentence in split_sentences(text):  # a filler never runs across a sentence boundary
        m = re.search(pattern, sentence, re.S)
        if m:
            return m.group(1).strip()
    return None


@dataclass
class ScriptedPolicy:
    """Deterministic rule-based agent; one instance per question (it keeps the pages it has seen)."""

    env: SearchEnvironment
    """The environment whose structured results the policy reads."""
    question: str
    """The question being answered."""
    rng: random.Random
    """Per-question RNG (seeded by the driver)."""
    refine_prob: float = 0.35
    """Probability of double-checking with a refined search before answering a 'which subject' question."""
    wrong_pick_prob: float = 0.2
    """Probability of opening the second search result first (visiting the wrong result)."""
    misleading_query_prob: float = 0.15
    """Probability that the first query is misleading: the question's generic words without its most specific
    ones, so the results are often about something else."""
    premature_answer_prob: float = 0.15
    """Probability of answering right after a search from the top result, without opening any page."""
    min_pages: int = 0
    """Pages to read before answering (long rollouts: keep searching and visiting until this many are read)."""
    seen: list[Document] = field(default_factory=list)
    """Pages visited so far."""
    fills: list[str] = field(default_factory=list)
    """Blank fillers found so far, one per quoted masked sentence."""
    _queue: list[Document] = field(default_factory=list)
    _last: str = ""
    _tries: int = 0
    _refined: bool = False
    _searches: int = 0
    _held: str | None = None

    def __post_init__(self) -> None:
        self.masks = _MASKED.findall(self.question)
        two = _BETWEEN.search(self.question) or _COMPARE.search(self.question)
        self.needed = min(len(self.masks), 2 if two else 1)

    def _keywords(self, text: str) -> str:
        words = [w for w in content_words(text) if w not in _SCAFFOLD and w.strip("_")]
        return " ".join(list(dict.fromkeys(words))[:8])

    def _search(self, query: str, think: str) -> str:
        self._last, self._tries = "search", 0
        hits = [h.doc for h in self.env.hits(query)]
        self._queue = [d for d in hits if d not in self.seen] or hits
        if len(self._queue) > 1 and self.rng.random() < self.wrong_pick_prob:
            self._queue[0], self._queue[1] = self._queue[1], self._queue[0]
        return render_action(think, {"name": "search", "arguments": {"query": [query]}})

    def _visit(self, doc: Document, think: str) -> str:
        self._last = "visit"
        self._tries += 1
        self.seen.append(doc)
        goal = goal_for(self.question, doc.title)  # the page and the missing fact, not the question pasted in
        return render_action(think, {"name": "visit", "arguments": {"url": [doc.url], "goal": goal}})

    def _explore(self) -> str | None:
        """Long rollouts: read another page (next result, else a new search around the pages read so far) while
        fewer than :attr:`min_pages` pages were read; None when enough were read or nothing new turns up."""
        if len(self.seen) >= self.min_pages:
            return None
        self._queue = [d for d in self._queue if d not in self.seen]
        if self._queue:
            doc = self._queue.pop(0)
            return self._visit(doc, f'Before answering I want more context. "{doc.title}" is among the results I '
                               "have not read yet, so I will open it and compare what it says.")  # fmt: skip
        last = self.seen[-1] if self.seen else None
        basis = f"{last.title} {last.description}" if last is not None else self.question
        q = self._keywords(basis + " " + self.question)
        self._searches += 1
        if self._searches > 3 * max(1, self.min_pages):
            return None
        hits = [h.doc for h in self.env.hits(q, 10)]
        if not [d for d in hits if d not in self.seen]:
            q = self._keywords(" ".join(self.rng.sample(content_words(self.question + " " + basis), 3)))
        return self._search(q, f"The pages so far cover part of it. I will look for related pages: {q}.")

    def _premature(self) -> str | None:
        """Answer from the top search result without reading it (a realistic mistake), or None."""
        if self._last != "search" or not self._queue or self.rng.random() >= self.premature_answer_prob:
            return None
        doc = self._queue[0]
        if _NUMERIC.search(self.question) or _BETWEEN.search(self.question) or _REPORT.search(self.question):
            return None  # these need a page's text; the policy never answers them blind
        self.premature_answer_prob = 0.0  # once per question
        return render_action(f'The top result is "{doc.title}", and its snippet looks like a match. I am fairly '
                             "sure that is it, so I will answer without opening the page.", answer=doc.title)  # fmt: skip

    def answer(self) -> str:
        """The final answer turn from what has been found so far."""
        if _REPORT.search(self.question) and self.seen:  # report questions: what the pages read say
            sents = [s for d in self.seen[-3:] for s in self.env.evidence(d, self.question, 2)]
            text = " ".join(dict.fromkeys(sents))
            return render_action(f"I have read {len(self.seen)} pages. I will summarise what they say about the "
                                 "question.", answer=text)  # fmt: skip
        if len(self.fills) >= self.needed > 0:
            years = [int(m.group(1)) for f in self.fills if (m := _YEAR.search(f))]
            before = _BEFORE.search(self.question)
            cmp = _COMPARE.search(self.question)
            if cmp and len(years) >= 2:
                later = years[1] > years[0]
                pick = cmp.group(2 if later == (cmp.group(3).lower() == "later") else 1).strip()
                return render_action(
                    f"{cmp.group(1)} is dated {years[0]} and {cmp.group(2)} {years[1]}, so the {cmp.group(3).lower()} "
                    f"one is {pick}.",
                    answer=pick,
                )
            if _BETWEEN.search(self.question) and len(years) >= 2:
                diff = abs(years[1] - years[0])
                return render_action(
                    f"The events are in {years[0]} and {years[1]}: {diff} years apart.", answer=str(diff)
                )
            if before and years:
                diff = int(before.group(1)) - years[0]
                return render_action(
                    f"It happened in {years[0]}, {diff} years before {before.group(1)}.", answer=str(diff)
                )
            return render_action(f'The page fills the blank with "{self.fills[0]}".', answer=self.fills[0])
        if not self.seen:
            return render_action("I found nothing relevant, so I cannot answer with confidence.", answer="Unknown")
        doc = self.seen[-1]
        if _NUMERIC.search(self.question):
            for sent in self.env.evidence(doc, self.question, 3):
                m = _NUMBER.search(sent)
                if m:
                    return render_action(f"The page on {doc.title} states: {sent}", answer=m.group(0))
        return render_action(f"The evidence on the page points to {doc.title}.", answer=doc.title)

    def act(self) -> str:
        """The next assistant turn (DeepResearch text: ``<think>`` then a tool call or ``<answer>``)."""
        if self._held is not None:  # reading more before giving the answer decided on earlier
            return self._explore() or self._held
        turn = self._act()
        if "<answer>" in turn and self.min_pages:
            more = self._explore()
            if more is not None:
                self._held = turn
                return more
        return turn

    def _act(self) -> str:
        premature = self._premature()
        if premature is not None:
            return premature
        if not self._last:
            m = _OPEN_PAGE.search(self.question)
            doc = self.env.page(m.group(1)) if m else None
            if doc is not None and self.rng.random() < self.misleading_query_prob:
                q = self._keywords(self.masks[0] if self.masks else doc.title)  # searches instead of opening it
                return self._search(q, f"I will search for the passage first: {q}.")
            if doc is not None:
                return self._visit(doc, f'The question names the page "{doc.title}". I will open it directly.')
            target = self.masks[0] if self.masks else self.question
            q = self._keywords(target)
            if self.rng.random() < self.misleading_query_prob and len(q.split()) >= 4:
                words = q.split()  # the most specific words come first: keep only the generic tail
                q = " ".join(words[len(words) // 2 :])
            return self._search(q, f"I need to find the source of this information. Let me search for: {q}.")
        if self._last == "search":
            if not self._queue:
                return self.answer()
            doc = self._queue.pop(0)
            return self._visit(doc, f'The result "{doc.title}" looks promising. I will read it to check the details.')
        # after a visit
        if len(self.fills) < self.needed:
            found = fill_blank(self.masks[len(self.fills)], self.seen[-1].text)
            if found:
                self.fills.append(found)
                if len(self.fills) < self.needed:
                    q = self._keywords(self.masks[len(self.fills)])
                    return self._search(q, f'Found "{found}". Now the second event; searching for: {q}.')
                return self.answer()
            if self._queue and self._tries < 3:
                doc = self._queue.pop(0)
                return self._visit(doc, f'That page did not contain it. Let me try "{doc.title}" instead.')
            if not self._refined:
                self._refined = True
                q = self._keywords(self.question)
                return self._search(q, f"Not found yet. A broader search may help: {q}.")
            return self.answer()
        if not self.masks and not self._refined and self.rng.random() < self.refine_prob:
            self._refined = True
            q = self._keywords(self.question + " " + self.seen[-1].description)
            return self._search(q, f"I am not certain yet. A refined search may help: {q}.")
        return self.answer()
