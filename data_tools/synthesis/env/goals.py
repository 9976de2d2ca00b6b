"""Visit goals written for a page and the fact still missing, never the question pasted in.

DeepResearch's ``visit`` tool takes a ``goal``: what the agent wants from the page ("Find the director of 2001: A
Space Odyssey and the year it was released"). Pasting the whole question there is what a lazy generator does, not
an agent. :func:`goal_for` writes a goal from the question's asked-for fact (its wh-phrase: the person, the year,
the number...) and the page. Both the scripted
rollout policy and the HAS alternatives use them; :func:`is_pasted_question` is the check the HAS suite applies.
"""

from __future__ import annotations

import re

from data_tools.synthesis.answers import content_words

_WH = (
    (re.compile(r"^\s*(who|whom)\b", re.I), "the person who"),
    (re.compile(r"^\s*whose\b", re.I), "whose"),
    (re.compile(r"^\s*(when|in what year|what year|in which year)\b", re.I), "when"),
    (re.compile(r"^\s*where\b", re.I), "where"),
    (re.compile(r"^\s*how (many|much)\b", re.I), "how many"),
    (re.compile(r"^\s*how (long|old|tall|far|big|large)\b", re.I), "how {0}"),
    (re.compile(r"^\s*(which|what)\s+(\w+)\b", re.I), "the {1} that"),
)
_QUOTED = re.compile(r'"[^"]{12,}"')
_AUX = re.compile(r"^(is|was|are|were|does|did|do|has|had|have|can|could|would)\s+", re.I)
_TITLE_TAIL = re.compile(r"\s+[-–|]\s+(Wikipedia|Britannica|IMDb|Official site)\b.*$", re.I)


def clean_title(title: str) -> str:
    """A result title without a site suffix ("Eiffel Tower - Wikipedia" -> "Eiffel Tower")."""
    return _TITLE_TAIL.sub("", title.strip()).strip()


def missing_fact(question: str, max_words: int = 7) -> str:
    """The fact a question asks for, as a short phrase ("who directed the 1968 film co-written..." ->
    "the person who directed the 1968 film"): its wh-phrase and at most ``max_words`` of what follows (at most
    half of the question, so the phrase never restates the whole question). Quoted passages become "the quoted
    description"."""
    q = _QUOTED.sub("the quoted description", question.strip().rstrip("?.! "))
    words = q.split()
    for pat, lead in _WH:
        m = pat.match(q)
        if m:
            rest = _AUX.sub("", q[m.end() :].strip())
            head = lead.format(*m.groups())
            break
    else:
        rest, head = q, "what the question asks about"
    limit = max(2, min(max_words, len(words) // 2))
    tail = " ".join(rest.split()[:limit]).rstrip(",;:")
    return f"{head} {tail}".strip()


def goal_for(question: str, title: str) -> str:
    """A visit goal for page ``title``: "Find <missing fact> on the <title> page"."""
    return f"Find {missing_fact(question)} on the {clean_title(title)} page"


def is_pasted_question(goal: str, question: str) -> bool:
    """Whether ``goal`` is the question pasted in: it contains the whole question (normalised), or it holds at
    least 80% of the question's content words when the question has four or more."""
    norm = lambda s: " ".join(re.findall(r"\w+", s.lower()))  # noqa: E731
    g, q = norm(goal), norm(question)
    if q and q in g:
        return True
    qw = set(content_words(question))
    return len(qw) >= 4 and len(qw & set(content_words(goal))) >= 0.8 * len(qw)
