"""What makes a HAS alternative plausible, and the rules that check it.

An alternative must look like a step the expert could have taken, so that only the *decision* separates it from
the original: a query in the original's register (natural phrasing with capitals and function words when the
original is natural, a keyword bag when the original is one), no instruction or role words the original lacks,
answers that are whole candidate answers found in the evidence so far or in memory (never a cut-off span), visit
goals written for the page and the missing fact (never the question pasted in), URLs only from results seen.

* :func:`query_is_natural`, :func:`is_fragment`, :func:`has_instruction_words`: the style rules (the HAS suite
  measures the first as a classifier: it must not find the original).
* :func:`answer_candidates`: whole candidate answers of the original's type (number, year, entity, sentence)
  from the evidence seen so far and from memory.
* :func:`natural_queries`: queries written like a natural original (entity swap, facet swap, question clauses).
* :func:`check_alternative`: one reason an alternative is implausible, or None (used for LLM replies, which are
  regenerated when rejected, and as an invariant on template ones).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from data_tools.synthesis.answers import INSTRUCTION_WORDS, STOPWORDS, content_words, numbers, split_sentences
from data_tools.synthesis.env.goals import clean_title, is_pasted_question

FUNCTION_WORDS = frozenset(
    "a an the of in on at to for from by with and or but as is was are were be been his her its their this that "
    "these those who whom whose which what when where why how did does do has have had".split()
)
"""Words whose presence marks natural phrasing (and whose position at an answer's edge marks a cut-off span)."""
ROLE_WORDS = frozenset("user assistant agent missing detail details query goal tool prompt".split())
"""Words of the generator's own vocabulary that never belong in an agent's query."""
_URLISH = re.compile(r"\b(?:en\s+)?wikipedia\s+org\b|https?://|www\.", re.I)
_YEARISH = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_DATE = re.compile(
    r"\b(?:\d{1,2} )?(?:January|February|March|April|May|June|July|August|September|October|November|December)"
    r"(?: \d{1,2})?,? \d{4}\b"
)
_MONTH = re.compile(r"(January|February|March|April|May|June|July|August|September|October|November|December)\b")
_NUM_UNIT = re.compile(r"\b\d[\d,]*(?:\.\d+)?(?:\s+(?:[a-z]+))?\b")
_CAPS = re.compile(r"\b[A-Z][\w'’.-]*(?:[ ]+(?:of|the|de|and|von|van|[A-Z][\w'’.-]*|\d+))*")
_EDGE_BAD = FUNCTION_WORDS - {"who", "what", "which", "how", "when", "where", "why"}


def query_is_natural(query: str) -> bool:
    """The style rule of the issue: a query with a capital letter or a function word is natural phrasing."""
    words = re.findall(r"[A-Za-z]+", query)
    return any(w[0].isupper() for w in words) or any(w.lower() in FUNCTION_WORDS for w in words)


def has_instruction_words(text: str, original: str = "") -> bool:
    """Whether ``text`` holds instruction / role words (or a URL spelt as words) that ``original`` lacks."""
    have = set(re.findall(r"\w+", original.lower()))
    words = set(re.findall(r"\w+", text.lower())) - have
    return bool(words & (INSTRUCTION_WORDS | ROLE_WORDS)) or (
        bool(_URLISH.search(text)) and not _URLISH.search(original)
    )


def is_fragment(answer: str) -> bool:
    """Whether an answer is a cut-off span rather than a whole answer: trailing ``..``, a function word at either
    edge (``of Westphalia is the``, ``with Arthur C.``), a dangling initial, a label prefix (``Time to answer:``),
    or unbalanced brackets / quotes."""
    a = answer.strip()
    if not a:
        return True
    if a.endswith("..") or a.endswith("…") or re.match(r"^[\w ]{1,30}:\s", a) and len(a.split()) > 3:
        return True
    words = re.findall(r"[\w'’-]+", a)
    if not words:
        return True
    if words[0].lower() in _EDGE_BAD and words[0][0].islower():
        return True
    if words[-1].lower() in _EDGE_BAD and len(words) > 1:
        return True
    if re.search(r"\b[A-Z]\.$", a) and len(words) > 1 and len(a) > 3:  # "Arthur C."
        return True
    if a.count("(") != a.count(")") or a.count('"') % 2 or a.count("[") != a.count("]"):
        return True
    return False


def answer_type(answer: str | None, question: str) -> str:
    """``number``, ``year``, ``date``, ``sentence`` or ``entity``: the kind of answer a step gives (from the answer
    when there is one, else from the question's wording)."""
    if answer:
        a = answer.strip()
        if _DATE.fullmatch(a):
            return "date"
        if _YEARISH.fullmatch(a):
            return "year"
        if numbers(a) and len(a.split()) <= 3 and re.match(r"^[\d$€£~≈+-]", a):
            return "number"
        return "sentence" if len(a.split()) > 8 else "entity"
    q = question.lower()
    if re.match(r"\s*(when|in what year|what year|in which year)\b", q):
        return "year"
    if re.match(r"\s*how (many|much|long|old|tall|far)\b", q):
        return "number"
    if re.match(r"\s*(write|summari[sz]e|describe|explain|compare)\b", q):
        return "sentence"
    return "entity"


def _shape(text: str) -> str:
    return re.sub(r"\d+", "9", text.split()[0]) if text.split() else ""


def answer_candidates(
    kind: str, evidence: str, titles: Sequence[str], memory: Sequence[str], original: str | None
) -> list[str]:
    """Whole candidate answers of ``kind`` found in ``evidence`` (the tool responses so far), result ``titles`` and
    ``memory`` (related corpus titles / memory entities), most recent evidence first; the original answer and
    answers that restate it are left out, and no candidate is a fragment."""
    orig = (original or "").strip().lower()
    out: list[str] = []
    if kind == "date":
        out = _DATE.findall(evidence)
    elif kind == "year":
        out = _YEARISH.findall(evidence)
    elif kind == "number":
        unit = (original or "").split()[1].lower() if original and len(original.split()) == 2 else None
        for m in _NUM_UNIT.finditer(evidence):
            parts = m.group(0).split()
            if unit:
                if len(parts) == 2 and parts[1].lower() == unit:
                    out.append(m.group(0))
            else:
                out.append(parts[0].rstrip(".,"))
        shape = _shape(original or "")
        same = [x for x in out if _shape(x) == shape]
        out = same or out  # numbers written like the original's ("54,321"), when the evidence has such numbers
    elif kind == "sentence":
        target = len((original or "").split()) or 30
        sents = [s for s in split_sentences(evidence) if len(s.split()) >= 5 and not _LABELISH.search(s)]
        for i in range(len(sents)):
            acc, j = [], i
            while j < len(sents) and sum(len(s.split()) for s in acc) < 0.8 * target:
                acc.append(sents[j])
                j += 1
            if acc:
                out.append(" ".join(acc))
    else:
        ents = [clean_title(t) for t in titles]
        plain = _LABELISH.sub(" ", evidence)
        for m in _CAPS.finditer(plain):
            span = m.group(0).strip().rstrip(".")
            if _MONTH.match(span):
                continue  # part of a date, not an entity
            if len(span) > 2 and content_words(span) and not set(content_words(span)) <= STOPWORDS:
                ents.append(span)
        out = ents + [clean_title(t) for t in memory]
    seen: set[str] = set()
    keep = []
    for a in out:
        a = a.strip().strip(",;:")
        low = a.lower()
        if not a or low in seen or is_fragment(a) or (orig and (low in orig or orig in low)):
            continue
        if len(a.split()) == 1 and a.lower() in FUNCTION_WORDS | INSTRUCTION_WORDS:
            continue
        seen.add(low)
        keep.append(a)
    if original and kind in ("entity", "sentence"):  # written like the original first: case, then length
        n, up = len(original.split()), original[:1].isupper()
        keep.sort(key=lambda a: (a[:1].isupper() != up, abs(len(a.split()) - n) > max(1, n // 3)))
    return keep


_LABELISH = re.compile(
    r"A Google search for '[^'\n]*' found \d+ results:|## Web Results|The useful information in \S+ for user goal"
    r"[^\n]*? as follows:|Evidence in page:|Summary:|\[[^\]]*\]\([^)]*\)|^\d+\.\s",
    re.M,
)


def _entity_spans(query: str, known: Sequence[str]) -> list[tuple[int, int]]:
    """Where entity names sit in ``query``: known names (titles, entities seen) first, else capitalised spans
    (with a leading number such as "2001:" kept)."""
    spans = []
    low = query.lower()
    for name in sorted({clean_title(k) for k in known if len(k) > 2}, key=len, reverse=True):
        i = low.find(name.lower())
        if i >= 0 and not any(a <= i < b for a, b in spans):
            spans.append((i, i + len(name)))
    if not spans:
        for m in re.finditer(r"(?:\b\d+:?\s+)?" + _CAPS.pattern, query):
            spans.append((m.start(), m.end()))
    return sorted(spans)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w'’:.-]+", text)


def _windows(tokens: Sequence[str], size: int) -> list[str]:
    """Contiguous runs of ``size`` tokens that start and end on a content word (no wh-word, no dangling "of")."""
    out = []
    for i in range(len(tokens) - size + 1):
        run = tokens[i : i + size]
        if run[0].lower() in FUNCTION_WORDS or run[-1].lower().rstrip(".") in FUNCTION_WORDS:
            continue
        out.append(" ".join(run).rstrip(".:"))
    return out


def question_windows(question: str, size: int) -> list[str]:
    """Runs of ``size`` words of the question (quotes left out) that start and end on a content word."""
    return _windows(_tokens(re.sub(r'"[^"]*"', " ", question).rstrip("?")), size)


def natural_queries(
    original: str,
    question: str,
    entities: Sequence[str],
    facets: Sequence[str],
    rng: random.Random,
    seen_numbers: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Queries written like the natural ``original`` (``(strategy, query)``), token for token: the same layout
    with another entity seen in the results or in memory in place of its entity, preferably one of as many words
    (``swap_entity``); one to half of its lower-case words replaced by other words of the question or topic
    terms (``swap_facet``); its number replaced by another one seen (``swap_number``). The query keeps the
    original's casing, function words and length, so only the decision differs. Runs of the question's own words
    as long as the original (``clause``) are the fallback when the original names no entity."""
    out: list[tuple[str, str]] = []
    known = [*entities, *re.findall(_CAPS, question)]
    spans = _entity_spans(original, known)
    others = [clean_title(e) for e in entities if clean_title(e).lower() not in original.lower()]
    others = [e for e in dict.fromkeys(others) if 1 <= len(e.split()) <= 5 and not _MONTH.match(e)]
    rng.shuffle(others)
    for a, b in spans[:2]:
        n = len(original[a:b].split())
        ranked = sorted(others, key=lambda e: len(e.split()) != n)
        for ent in ranked[:4]:
            out.append(("swap_entity", original[:a] + ent + original[b:]))
    inside = lambda i: any(a <= i < b for a, b in spans)  # noqa: E731
    toks = [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"[\w'’-]+", original)]
    lower = [(i, j, w) for i, j, w in toks if w[:1].islower() and w not in FUNCTION_WORDS and not inside(i)]
    have = {w.lower() for _, _, w in toks}
    ent_words = {w.lower().strip("'s’") for k in known for w in k.split()}
    pool = [w for w in content_words(question) if w[:1].isalpha() and w not in have and w not in ent_words]
    pool += [f for f in facets if f[:1].isalpha() and f.lower() not in have | {"wikipedia", "wiki"}]
    pool = [w for w in dict.fromkeys(pool) if w not in INSTRUCTION_WORDS | ROLE_WORDS]
    for _ in range(6 if lower and pool else 0):
        picks = rng.sample(lower, rng.randint(1, max(1, len(lower) // 2)))
        q = original
        for i, j, _w in sorted(picks, reverse=True):
            q = q[:i] + rng.choice(pool[:12]) + q[j:]
        out.append(("swap_facet", q))
    nums = [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"\b\d+\b", original) if not inside(m.start())]
    for i, j, x in nums[:1]:
        for y in [v for v in seen_numbers if len(v) == len(x) and v != x][:3]:
            out.append(("swap_number", original[:i] + y + original[j:]))
    if not spans:
        size = len(original.split())
        out.extend(("clause", w) for w in question_windows(question, size) if w.lower() != original.lower())
    keep = []
    for name, q in out:
        q = re.sub(r"\s+", " ", q).strip()
        if q and q.lower() != original.lower() and not has_instruction_words(q, original + " " + question):
            keep.append((name, q))
    return keep


def _cap_count(text: str) -> int:
    return sum(w[:1].isupper() for w in text.split())


def check_alternative(kind: str, args: dict[str, Any] | None, answer: str | None, orig: Any, ctx: Any) -> str | None:
    """One reason why an alternative is implausible, or None.

    ``kind``: ``search`` / ``visit`` / ``answer`` / other tool; ``orig``: the original
    :class:`~data_tools.synthesis.has.action.Action`; ``ctx``: its
    :class:`~data_tools.synthesis.has.step_context.StepContext`. Reasons: ``query_style`` (natural vs keyword register
    differs from the original's query, or from the trajectory's queries when the original is not a search),
    ``instruction_words``, ``url_not_seen``, ``pasted_goal``, ``fragment_answer``.
    """
    if kind == "answer":
        return "fragment_answer" if is_fragment(answer or "") else None
    args = args or {}
    if kind == "search":
        queries = args.get("query")
        queries = [queries] if isinstance(queries, str) else list(queries or [])
        oq = orig.first_query() if orig is not None else None
        for q in queries:
            if not isinstance(q, str) or len(content_words(q)) < 2:
                return "query_style"
            want = query_is_natural(oq) if oq else getattr(ctx, "natural", True)
            if query_is_natural(q) != want:
                return "query_style"
            if has_instruction_words(q, (oq or "") + " " + ctx.question):
                return "instruction_words"
    if kind == "visit":
        urls = args.get("url")
        urls = [urls] if isinstance(urls, str) else list(urls or [])
        seen = {u for _, u in ctx.links}
        if not urls or any(u not in seen for u in urls):
            return "url_not_seen"
        goal = args.get("goal")
        if not isinstance(goal, str) or not goal.strip() or is_pasted_question(goal, ctx.question):
            return "pasted_goal"
    return None
