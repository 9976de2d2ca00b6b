"""Offline (template-backend) planning and reasoning actions for research questions
(:mod:`data_tools.synthesis.fas.research`).

Planning: an analysis that restates what is asked, lists the constraints the question sets (its clue phrases),
says why they have to be looked up and how, then a *real* first action: ``google_scholar`` for scholarly subjects,
``search`` otherwise, with one query per constraint (or per compared entity, per report aspect). The planner
reads the question and its clue phrases, never the answer or the hidden entity.

Reasoning: A1 is a concrete first attempt from "internal knowledge", simulated by the memory item's *other*
statements (not the ones the question was built from), so the draft is sometimes right, often partial or wrong,
as a model's recall is. A2 combines the mapped knowledge (the statements the question was built from) into the
answer with its steps written out: which source satisfies which constraint, what entity they identify, which
value they give and the arithmetic or comparison on it, then what changed from the draft.

Every sentence is drawn from several phrasings with the question's own content in between, so no frame of 8
words recurs across a large share of the samples (``summary.json`` reports the top 8-gram share per style).
"""

from __future__ import annotations

import random
from typing import Any

from data_tools.synthesis.fas.clues import KIND_PHRASE, attributes, clause, fmt_number
from data_tools.synthesis.fas.knowledge import content_words, find_dates
from data_tools.synthesis.fas.questions import REFERENCE_YEAR, stable_int

ACADEMIC = frozenset(
    "theory theorem species genus disease syndrome virus bacteria protein cell molecule chemical chemistry physics "
    "physicist chemist biology biologist mathematics mathematician philosophy philosopher economics economist "
    "psychology medicine medical scientific scientist research study studies evolution quantum algorithm "
    "astronomy astronomer galaxy planet climate linguistics genetics gene neuron brain experiment "
    "hypothesis".split()
)


def _article(word: str | None) -> str:
    return "an" if (word or "x")[0].casefold() in "aeiou" else "a"


def _rng(question: dict[str, Any], salt: str) -> random.Random:
    return random.Random(stable_int(salt, question.get("id") or question["question"]))


def _pick(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def _phrases(question: dict[str, Any]) -> list[str]:
    return [c["phrase"] for c in question.get("clues") or []]


def is_academic(question: dict[str, Any]) -> bool:
    """Whether the question concerns a scholarly subject (science, medicine, philosophy, ...)."""
    return bool(set(content_words(question["question"])) & ACADEMIC)


def _query(*parts: str, limit: int = 7) -> str:
    words: list[str] = []
    for p in parts:
        for w in content_words(p or ""):
            if w not in words:
                words.append(w)
    return " ".join(words[:limit])


def plan_queries(question: dict[str, Any]) -> list[str]:
    """The first action's queries: one per constraint (clue phrase, with the entity's type), per compared entity
    or per report aspect."""
    style, ask = question["style"], question.get("ask")
    desc = question.get("description") or ""
    phrases = _phrases(question)
    if ask in ("compare", "number") and question.get("entities"):
        kind = KIND_PHRASE.get(question.get("kind") or question.get("attribute") or "", "")
        return [f"{e} {kind}".strip() for e in question["entities"]]
    if style == "report_synthesis":
        subject = question.get("target") or ""
        return [_query(subject, a, limit=6) or subject for a in phrases][:3] or [subject]
    if ask == "number":  # one entity, described: find it first, with the dated fact
        return [q for q in (_query(desc, *phrases[:1]), _query(desc, phrases[-1], "year")) if q][:2]
    queries = [_query(desc, p) for p in phrases[:2]]
    if style == "web_navigation":
        queries = [_query(desc, *phrases[:2], "wikipedia")]
    return [q for q in dict.fromkeys(queries) if q] or [_query(question["question"])]


def template_plan(question: dict[str, Any], entity: str = "") -> dict[str, Any]:
    """Analysis + first action for a research question (see the module docstring); ``entity`` is unused (kept
    for callers) because the planner must not know what the question hides."""
    rng = _rng(question, "plan")
    style, ask = question["style"], question.get("ask")
    phrases = _phrases(question)
    desc = question.get("description")
    queries = plan_queries(question)
    what = {
        "entity": _pick(rng, "a name", "an identity", "which entity fits", "who or what"),
        "year": _pick(rng, "a year", "one date", "when it happened", "the year"),
        "number": _pick(rng, "a number", "a difference", "some arithmetic", "a count of years"),
        "compare": _pick(rng, "a comparison", "which of two", "one of two names", "the winner"),
        "report": _pick(rng, "a report", "an overview", "a sourced summary", "a write-up"),
    }.get(ask or "", "a fact")
    parts = [
        _pick(
            rng,
            f"Wanted: {what}.",
            f"Goal: {what}.",
            f"Asked: {what}.",
            f"I must find {what}.",
            f"This needs {what}.",
            f"Task: {what}.",
            "",
        )
    ]
    if style == "multi_hop" and len(phrases) >= 2:
        first = "; ".join(phrases[:-1])
        typ = f"{_article(desc)} {desc}" if desc else "an entity"
        parts.append(
            _pick(
                rng,
                f"Two hops: {typ} that {first}; then its link that {phrases[-1]}.",
                f"Bridge: {typ} ({first}). Target: linked, {phrases[-1]}.",
                f"Find {typ} that {first}, then a neighbour that {phrases[-1]}.",
                f"Hop one: {typ}, it {first}. Hop two: it {phrases[-1]}.",
                f"First {typ} ({first}); next, whatever {phrases[-1]}.",
                f"{typ} that {first} leads to one that {phrases[-1]}.",
            )
        )
    elif ask in ("entity", "year", "number") and phrases and not question.get("entities"):
        typ = f"{_article(desc)} {desc}" if desc else "something"
        listed = "; ".join(f"it {p}" for p in phrases[:3])
        parts.append(
            _pick(
                rng,
                f"The target is {typ}; {listed}.",
                f"Constraints ({typ}): {listed}.",
                f"Unnamed, but {typ}, and {listed}.",
                f"Clues I have: {typ}; {listed}.",
                f"Known: {typ}; {listed}.",
                f"It is {typ}. Also, {listed}.",
            )
        )
        if len(phrases) > 1:
            parts.append(
                _pick(
                    rng,
                    f"No single clue suffices; '{phrases[0]}' and '{phrases[1]}' together should.",
                    f"Intersecting '{phrases[0]}' with '{phrases[1]}' narrows it down.",
                    f"Candidates for '{phrases[0]}' are many; '{phrases[1]}' filters them.",
                    "",
                )
            )
    elif question.get("entities"):
        a, b = question["entities"][:2]
        kind = KIND_PHRASE.get(question.get("kind") or question.get("attribute") or "", "value")
        parts.append(
            _pick(
                rng,
                f"I need the {kind} of {a} and of {b}; neither is given.",
                f"Both values are missing: {a}'s {kind} and {b}'s {kind}.",
                f"The {kind} figures for {a} and {b} have to be looked up first.",
                f"Before any arithmetic or comparison I need {a} and {b}'s {kind}.",
            )
        )
    elif style == "report_synthesis":
        subj = question.get("target") or "the subject"
        parts.append(
            _pick(
                rng,
                f"The report on {subj} has {len(phrases)} parts.",
                f"{len(phrases)} aspects of {subj}, each needing a source.",
                f"There are {len(phrases)} points about {subj} to support.",
                f"I count {len(phrases)} requested topics on {subj}.",
                f"Each of the {len(phrases)} points on {subj} needs evidence.",
            )
        )
    tool = "google_scholar" if is_academic(question) and style != "web_navigation" else "search"
    shown = " / ".join(queries)
    if style == "web_navigation":
        tail = _pick(
            rng,
            f"Page unknown, so search: {shown}.",
            f"To find the article I search {shown}.",
            f"First locate the page by searching {shown}.",
            f"Search ({shown}), then open the article.",
            f"Finding the entry needs a search: {shown}.",
            f"I will search for the page with {shown}.",
        )
    elif tool == "google_scholar":
        tail = _pick(
            rng,
            f"Scholarly topic, so Google Scholar: {shown}.",
            f"Academic sources fit; querying {shown}.",
            f"Academic publications should help: {shown}.",
            f"Google Scholar first, with {shown}.",
            f"A scholar search for {shown} comes first.",
        )
    else:
        tail = _pick(
            rng,
            f"First step: search {shown}.",
            f"I start with a web search: {shown}.",
            f"Searching {shown} should surface candidates.",
            f"Let me search for {shown}.",
            f"Search query: {shown}.",
            f"Search terms: {shown}.",
            f"Web search, one query per clue: {shown}.",
            f"I will search {shown} first.",
        )
    parts.append(tail)
    if rng.random() < 0.35 and len(parts) > 2:
        parts[0], parts[1] = parts[1], parts[0]
    think = " ".join(p for p in parts if p)
    return {"think": think, "action": {"type": "tool_call", "name": tool, "arguments": {"query": queries}}}


# -- reasoning ---------------------------------------------------------------------------------------------------
def _recall(item: dict[str, Any] | None, question: dict[str, Any]) -> list[dict[str, Any]]:
    """The item's statements the question was *not* built from: the simulated internal knowledge."""
    if not item:
        return []
    used = set(question["statement_ids"])
    return [s for s in item["statements"] if s["id"] not in used]


def _subs(question: dict[str, Any]) -> list[str]:
    ask, phrases = question.get("ask"), _phrases(question)
    rng = _rng(question, "subs")
    if question.get("entities"):
        kind = KIND_PHRASE.get(question.get("kind") or question.get("attribute") or "", "value")
        form = _pick(rng, "What is the {k} of {e}?", "{e}: {k}?", "When/what was {e}'s {k}?", "{k} of {e}?")
        subs = [form.format(k=kind, e=e) for e in question["entities"]]
        return subs + [
            _pick(rng, "Which is {a}?", "So which is {a}?", "Which one comes out {a}?", "{a}: which?").format(
                a=question["attribute"]
            )
            if ask == "compare"
            else _pick(rng, "What is the difference?", "The gap?", "Difference?", "How far apart?")
        ]
    if ask == "report":
        lead = _pick(rng, "What do sources say about", "What is documented on", "Which facts cover", "Sources on")
        return [f"{lead} {p}?" for p in phrases] or ["What is the subject known for?"]
    lead = _pick(rng, "Which entity", "What", "Which candidate", "Who or what", "Which thing")
    subs = [f"{lead} {p}?" for p in phrases[:2]]
    if ask == "year":
        subs.append(f"In which year did it {phrases[-1]}?" if phrases else "In which year?")
    elif ask == "number":
        subs.append(_pick(rng, "Which dates does it need?", "What are the two years?", "Which values go in?"))
    if len(subs) > 1 and ask == "entity":
        subs.append(_pick(rng, "What fits all of them?", "Which satisfies every clue?", "Where do they meet?"))
    return subs or [question["question"]]


def template_a1(question: dict[str, Any], item: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draft A1: sub-questions and a concrete first answer recalled from the item's other statements."""
    rng = _rng(question, "a1")
    ask = question.get("ask")
    recall = _recall(item, question)
    facts = rng.sample(recall, min(len(recall), rng.choice((1, 2))))
    known = " ".join(f["text"] for f in facts)
    qwords = set(content_words(question["question"]))
    if ask == "report":
        subj = question.get("target") or "the subject"
        draft = known or _pick(rng, f"Little about {subj}.", f"Only that {subj} exists.", f"{subj}: unsure.")
        why = _pick(
            rng,
            f"I remember this much: {known or 'hardly anything'}",
            f"I can only offer this: {known or 'nothing concrete'}",
            f"{known or 'Nothing concrete.'}",
            f"Recalled so far: {known or 'very little'}",
        )
    elif ask == "compare" and question.get("entities"):
        draft = rng.choice(question["entities"])
        why = _pick(
            rng,
            f"No firm figures in mind; hunch: {draft}.",
            f"By impression, {draft}, but I am unsure.",
            f"Without the figures I would guess {draft}.",
            f"I lean towards {draft}, unverified.",
            f"Offhand I would say {draft}.",
        )
    elif ask in ("year", "number"):
        dates = [d for f in facts for d in find_dates(f["text"]) if d.year is not None]
        if dates:
            d = rng.choice(dates)
            draft = d.surface if ask == "year" else fmt_number(abs(REFERENCE_YEAR - d.year) if d.year else 0)
            why = _pick(
                rng,
                f"I recall that {known} So {d.surface} comes to mind, which gives {draft}, though it may be a "
                f"different event.",
                f"My memory links this subject to {d.surface} ({known}), hence a first guess of {draft}.",
            )
        else:
            draft = "unknown"
            why = _pick(
                rng,
                f"I recall: {known or 'nothing dated'} No usable number, though.",
                f"{known or 'Nothing dated fits.'} Nothing I can compute with.",
                f"No date that fits. {known}",
                f"Memory gives no usable year. {known}",
            )
    else:  # entity
        overlap = sorted(facts, key=lambda f: -len(qwords & set(content_words(f["text"]))))
        hit = overlap[0] if overlap and qwords & set(content_words(overlap[0]["text"])) else None
        mentions = [m for f in facts for m in f.get("mentions") or []]
        if hit is not None and item is not None:
            draft = (
                item["entity"]
                if ask == "entity" and question["style"] != "multi_hop"
                else ((hit.get("mentions") or [item["entity"]])[0])
            )
            why = _pick(
                rng,
                f"This reminds me: {hit['text']} That points to {draft}.",
                f"I remember that {hit['text']} So: {draft}.",
                f"Partly fitting: {hit['text']} Candidate: {draft}.",
                f"{hit['text']} Hence my guess, {draft}.",
                f"Recalled: {hit['text']} Maybe {draft}.",
            )
        elif mentions:
            draft = rng.choice(mentions)
            why = _pick(
                rng,
                f"The clues vaguely suggest {draft}, but I cannot check them from memory.",
                f"{draft} comes to mind, though I am far from sure.",
                f"My best unverified guess is {draft}.",
            )
        else:
            draft = "unknown"
            why = _pick(rng, "No candidate comes to mind.", "Nothing fits, from memory.", "No idea yet.", "Blank.")
    reasoning = _pick(rng, "From memory: ", "Offhand: ", "Recall: ", "", "", "Guessing: ", "First try: ")
    labels = (
        _pick(rng, "Sub-questions:", "Needed:", "Breakdown:", "To find out:", "Parts:", "Steps:", "Questions:"),
        _pick(rng, "Draft answer:", "Tentative:", "For now:", "Unverified:", "Draft:", "Guess:"),
    )
    return {"sub_questions": _subs(question), "reasoning": reasoning + why, "draft_answer": draft, "labels": labels}


def _subject(k: dict[str, Any]) -> str:
    return k.get("subject") or (k.get("source") or {}).get("title") or k.get("entity") or "the subject"


def _value(question: dict[str, Any], k: dict[str, Any]) -> tuple[float, str] | None:
    kind = question.get("kind") or question.get("attribute")
    for a in attributes(k, _subject(k)):
        if a.kind == kind or (kind == "lifespan" and a.kind in ("birth", "death")):
            return a.value, a.surface
    return None


def _derive(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Steps and answer from the mapped knowledge alone (numbers from the statements' typed attributes)."""
    ask = question.get("ask")
    rng = _rng(question, "steps")
    by_id = {k["id"]: (i, k) for i, k in enumerate(knowledge, 1)}
    clues = [c for c in question.get("clues") or [] if c["statement_id"] in by_id]
    steps: list[str] = []
    if ask == "report":
        rng = _rng(question, "report")
        for i in range(1, len(knowledge) + 1):
            topic = clues[i - 1]["phrase"] if i <= len(clues) else "one more aspect"
            steps.append(
                _pick(rng, f"[{i}] covers {topic}.", f"{topic}: [{i}].", f"For {topic}, [{i}].", f"[{i}] -> {topic}.")
            )
        return steps, " ".join(k["text"] for k in knowledge)
    if question.get("entities") and ask in ("compare", "number"):
        vals = []
        for e in question["entities"]:
            got = next(
                (
                    (i, v)
                    for i, k in by_id.values()
                    if _subject(k).casefold() == e.casefold() and (v := _value(question, k))
                ),
                None,
            )
            if got is None:
                return [f"The knowledge gives no value for {e}."], "unknown"
            vals.append((e, got[0], got[1]))
            steps.append(f"[{got[0]}] gives {e}: {got[1][1]}.")
        (ea, _, (va, _)), (eb, _, (vb, _)) = vals
        if ask == "number":
            ans = fmt_number(abs(va - vb))
            steps.append(f"|{fmt_number(va)} - {fmt_number(vb)}| = {ans}.")
            return steps, ans
        attr = question.get("attribute")
        first = ea if (va < vb) == (attr in ("earlier", "smaller")) else eb
        steps.append(
            _pick(
                rng,
                f"{fmt_number(va)} vs {fmt_number(vb)}: {first} is the {attr} one.",
                f"So {first} is {attr} ({fmt_number(va)} vs {fmt_number(vb)}).",
                f"Comparing {fmt_number(va)} with {fmt_number(vb)} gives {first}.",
                f"{attr.capitalize()}: {first}.",
            )
        )
        return steps, first
    # entity / year / single-entity number: identify the subject from the clue statements
    for c in clues:
        i, k = by_id[c["statement_id"]]
        steps.append(
            _pick(
                rng,
                f"[{i}] says {_subject(k)} {c['phrase']}.",
                f"Per [{i}], {_subject(k)} {c['phrase']}: a match.",
                f"{_subject(k)} {c['phrase']}, according to [{i}].",
                f"[{i}]: {_subject(k)} {c['phrase']} - that fits.",
                f"Source [{i}] fits: {_subject(k)} {c['phrase']}.",
            )
        )
    if ask == "number":
        got = [(i, v) for i, k in by_id.values() if (v := _value(question, k))]
        if question.get("attribute") == "lifespan" and len(got) >= 2:
            ys = sorted(v[0] for _, v in got)
            ans = fmt_number(ys[-1] - ys[0])
            steps.append(f"Birth {fmt_number(ys[0])}, death {fmt_number(ys[-1])}: {ans} years.")
            return steps, ans
        if got:
            ans = fmt_number(REFERENCE_YEAR - got[0][1][0])
            steps.append(f"{REFERENCE_YEAR} - {fmt_number(got[0][1][0])} = {ans}.")
            return steps, ans
        return steps, "unknown"
    if not clues:
        return ["None of the knowledge matches the clues."], "unknown"
    if ask == "year":
        _, k = by_id[clues[-1]["statement_id"]]
        main = clause(k["text"], _subject(k)) or k["text"]
        dates = find_dates(main)
        if not dates:
            return steps, "unknown"
        steps.append(
            _pick(
                rng, f"It gives {dates[0].surface}.", f"Date: {dates[0].surface}.", f"That was in {dates[0].surface}."
            )
        )
        return steps, dates[0].surface
    answer = _subject(by_id[clues[-1]["statement_id"]][1])
    if question["style"] == "multi_hop" and len(clues) >= 2:
        bridge = _subject(by_id[clues[0]["statement_id"]][1])
        steps.insert(
            len(clues) - 1,
            _pick(
                rng,
                f"{bridge} connects to {answer}.",
                f"The record ties {bridge} to {answer}.",
                f"From {bridge} the link leads to {answer}.",
                f"{answer} appears among {bridge}'s links.",
            ),
        )
    return steps, answer


def revise_note(draft: str, answer: str, rng: random.Random | None = None) -> str:
    """The sentence of A2 that says what changed from the draft and why."""
    rng = rng or random.Random(0)
    d, a = " ".join(draft.split()).casefold(), " ".join(answer.split()).casefold()
    if d in ("unknown", ""):
        return _pick(
            rng,
            "My draft had no answer.",
            "The draft's gap is filled.",
            "My draft was empty.",
            "Draft: nothing. Now: sourced.",
            "Unlike my draft, this holds.",
            "No draft to compare.",
            "This replaces an empty draft.",
            "Better than my blank draft.",
        )
    if d == a:
        return _pick(
            rng,
            f"This confirms my draft ({draft}).",
            f"My draft ({draft}) holds up.",
            "The draft was right.",
            "Same as my draft.",
            "Draft confirmed.",
            f"{draft}, as drafted.",
        )
    if d and a and (d in a or a in d):
        return _pick(rng, f"My draft ({draft}) was only partly right.", f"The draft ({draft}) was incomplete.")
    return _pick(
        rng,
        f"My draft ({draft}) was wrong; the sources replace it.",
        f"So the draft answer {draft} does not survive.",
        f"I drop my draft ({draft}).",
        f"The draft ({draft}) was mistaken.",
        f"Not {draft}, as my draft had it.",
        f"Correcting my draft: not {draft}.",
    )


def template_a2(question: dict[str, Any], knowledge: list[dict[str, Any]], a1: dict[str, Any]) -> dict[str, Any]:
    """Refined A2: the answer the mapped knowledge supports, with the steps, and what changed from the draft."""
    rng = _rng(question, "a2")
    steps, answer = _derive(question, knowledge)
    if question.get("ask") == "report":
        from data_tools.synthesis.answers import rubric

        facts = question.get("required_facts") or [k["text"] for k in knowledge]
        had = rubric(a1["draft_answer"], facts)[0]
        note = _pick(
            rng,
            f"My draft covered {had} of {len(facts)}.",
            f"The draft had {had}/{len(facts)} facts.",
            f"Draft coverage: {had} of {len(facts)}.",
            f"{had} of {len(facts)} were in my draft.",
            f"The draft got {had} right of {len(facts)}.",
            f"Draft score: {had}/{len(facts)}.",
            f"My draft knew {had}; {len(facts) - had} are new.",
        )
    elif answer == "unknown":
        note = f"My draft ({a1['draft_answer']}) cannot be checked against this knowledge."
    else:
        note = revise_note(a1["draft_answer"], answer, rng)
    lead = _pick(rng, "Working through the sources:", "Step by step:", "Combining the evidence:", "", "", "So:")
    body = " ".join(f"({i}) {s}" for i, s in enumerate(steps, 1))
    return {"reasoning": " ".join(x for x in (lead, body, note) if x), "answer": answer}
