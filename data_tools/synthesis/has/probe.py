"""``megatron-agentic data has-probe``: can a simple classifier tell the original step from the alternatives?

HAS teaches *which action to take*; if the original option of a decision is recognisable by its wording (its
phrasing, length or formatting), a model learns "pick the option that sounds like the policy" instead. The
probe fits a conditional logistic regression (a softmax over the options of each decision) on word 1-2-grams
and length features of the options in one file (``--train``) and reports, on another file (``--test``), how
often the highest-scoring option is the original, next to chance (the mean of 1/options). Options are read from
``meta.steps[*].options`` / ``original_index`` of ``data has`` output. Accuracy well above chance means the
options carry a tell; the most original-like features are printed to find it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.synthesis.has import probe_context as pc
from data_tools.synthesis.has.choice_model import choice_accuracy, fit_conditional_logit

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+|[^\w\s]", re.U)
LENGTH_FEATURES = ("len:chars", "len:words", "len:rel_chars", "len:rel_words", "len:calls")


@dataclass
class ProbeDecision:
    """One decision: its options' texts and the index of the original."""

    options: list[str]
    """Rendered options in presentation order."""
    original: int
    """0-based index of the original step."""


def read_decisions(path: str | Path, limit: int | None = None, mask: bool = False) -> list[ProbeDecision]:
    """Decisions of a ``data has`` output file (every step of every sample with at least two options); ``mask``:
    options with their content masked (:func:`mask_content`)."""
    out: list[ProbeDecision] = []
    masker = mask_content if mask else str
    for lineno, rec in iter_jsonl(path):
        if isinstance(rec, BadLine):
            log.warning("%s", rec)
            continue
        steps = (rec.get("meta") or {}).get("steps") if isinstance(rec.get("meta"), dict) else None
        if not isinstance(steps, list):
            raise ValueError(f"{path}:{lineno}: no meta.steps (is this `data has` output?)")
        for st in steps:
            opts, orig = st.get("options"), st.get("original_index")
            if isinstance(opts, list) and len(opts) >= 2 and isinstance(orig, int) and 0 <= orig < len(opts):
                out.append(ProbeDecision([masker(str(o)) for o in opts], orig))
        if limit is not None and len(out) >= limit:
            break
    return out[:limit] if limit is not None else out


_KEEP = frozenset("tool_call answer name arguments query url goal search visit google_scholar code".split())
_WORDISH = re.compile(r"\w+", re.U)


def mask_content(text: str) -> str:
    """``text`` with its content masked: every word except markup and tool-call keys becomes its shape (``Xx``
    capitalised, ``x`` lower case, ``X`` all caps, ``9`` number), so that only form is left: layout, length,
    casing, punctuation. The probe on masked options measures style tells alone."""

    def shape(m: re.Match) -> str:
        w = m.group(0)
        if w.lower() in _KEEP:
            return w
        if w[0].isdigit():
            return "9"
        if w.isupper() and len(w) > 1:
            return "X"
        return "Xx" if w[0].isupper() else "x"

    return _WORDISH.sub(shape, text)


def _grams(text: str) -> list[str]:
    toks = _TOKEN.findall(text.lower())
    return [f"w:{t}" for t in toks] + [f"b:{a} {b}" for a, b in zip(toks, toks[1:])]


def _lengths(options: Sequence[str]) -> np.ndarray:
    chars = np.array([math.log1p(len(o)) for o in options])
    words = np.array([math.log1p(len(o.split())) for o in options])
    calls = np.array([float(o.count("<tool_call>")) for o in options])
    return np.stack([chars, words, chars - chars.mean(), words - words.mean(), calls], axis=1)


@dataclass
class Featurizer:
    """Word 1-2-gram counts (vocabulary from the training decisions) plus length features."""

    min_count: int = 2
    """Keep n-grams seen in at least this many training options."""
    max_features: int = 50000
    """Keep at most this many n-grams (most frequent first)."""
    vocab: dict[str, int] = field(default_factory=dict)
    """n-gram -> column (columns after the length features)."""

    def fit(self, decisions: Iterable[ProbeDecision]) -> Featurizer:
        """Build the vocabulary."""
        df: Counter = Counter()
        for d in decisions:
            for o in d.options:
                df.update(set(_grams(o)))
        kept = [g for g, c in df.most_common(self.max_features) if c >= self.min_count]
        self.vocab = {g: len(LENGTH_FEATURES) + i for i, g in enumerate(sorted(kept))}
        return self

    @property
    def names(self) -> list[str]:
        """Column names."""
        return list(LENGTH_FEATURES) + sorted(self.vocab, key=self.vocab.__getitem__)

    def transform(self, decisions: Sequence[ProbeDecision]) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        """``(X, group offsets, original row per group)``; options of a decision are consecutive rows."""
        rows, cols, vals = [], [], []
        offsets, targets = [0], []
        r = 0
        for d in decisions:
            lens = _lengths(d.options)
            for j, o in enumerate(d.options):
                for c, v in enumerate(lens[j]):
                    rows.append(r), cols.append(c), vals.append(float(v))
                counts = Counter(self.vocab[g] for g in _grams(o) if g in self.vocab)
                for c, v in counts.items():
                    rows.append(r), cols.append(c), vals.append(math.log1p(v))
                r += 1
            targets.append(offsets[-1] + d.original)
            offsets.append(r)
        x = sparse.csr_matrix((vals, (rows, cols)), shape=(r, len(LENGTH_FEATURES) + len(self.vocab)))
        return x, np.array(offsets), np.array(targets)


@dataclass
class ProbeResult:
    """What the probe found."""

    train_decisions: int
    """Decisions it was fitted on."""
    test_decisions: int
    """Held-out decisions it was scored on."""
    accuracy: float
    """Held-out share of decisions whose top-scoring option is the original."""
    chance: float
    """Expected accuracy of a random pick (mean of 1/options)."""
    train_accuracy: float
    """Accuracy on the training decisions (how much it could fit)."""
    top_features: list[tuple[str, float]]
    """The most original-like features with their weights (where a tell would show)."""

    @property
    def excess(self) -> float:
        """Accuracy above chance."""
        return self.accuracy - self.chance

    def as_dict(self) -> dict[str, Any]:
        """JSON form (with ``excess``)."""
        return {**asdict(self), "excess": round(self.excess, 4)}

    def line(self) -> str:
        """One-line summary."""
        return (
            f"held-out accuracy {self.accuracy:.3f} vs chance {self.chance:.3f} (excess {self.excess:+.3f}) on "
            f"{self.test_decisions} decisions; fitted on {self.train_decisions} (train accuracy "
            f"{self.train_accuracy:.3f})"
        )


def run_probe(
    train: Sequence[ProbeDecision], test: Sequence[ProbeDecision], l2: float = 1.0, top: int = 10
) -> ProbeResult:
    """Fit on ``train``, score on ``test``."""
    if not train or not test:
        raise ValueError(f"the probe needs decisions in both splits (train {len(train)}, test {len(test)})")
    feat = Featurizer().fit(train)
    xtr, otr, ttr = feat.transform(train)
    xte, ote, tte = feat.transform(test)
    w = fit_conditional_logit(xtr, otr, ttr, l2)
    names = feat.names
    order = np.argsort(-w)[:top]
    return ProbeResult(
        train_decisions=len(train),
        test_decisions=len(test),
        accuracy=round(choice_accuracy(xte @ w, ote, tte), 4),
        chance=round(float(np.mean([1.0 / len(d.options) for d in test])), 4),
        train_accuracy=round(choice_accuracy(xtr @ w, otr, ttr), 4),
        top_features=[(names[i], round(float(w[i]), 3)) for i in order if w[i] > 0],
    )


def context_report(train: str | Path, test: str | Path, l2: float = 1.0) -> dict[str, Any]:
    """The rule checks and the context-aware figure on ``test`` (fitted on ``train``); see
    :mod:`data_tools.synthesis.has.probe_context`."""
    te = list(pc.read_context_decisions(test))
    tr = list(pc.read_context_decisions(train))
    return {
        "query_style_rule": pc.query_style_rule(te),
        "answer_in_evidence_rule": pc.answer_in_evidence_rule(te),
        "context_aware": pc.context_probe(tr, te, l2),
        "defects": pc.alternative_defects(te),
    }


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``data has-probe``."""
    p = argparse.ArgumentParser(prog="megatron-agentic data has-probe", description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="`data has` output to fit the probe on")
    p.add_argument("--test", required=True, help="`data has` output of another split to score it on")
    p.add_argument("--l2", type=float, default=1.0, help="L2 regularisation strength (default 1.0)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many decisions per file")
    p.add_argument("--max-excess", type=float, default=None,
                   help="exit with status 1 when held-out accuracy exceeds chance by more than this (e.g. 0.05)")  # fmt: skip
    p.add_argument("--mask", choices=("none", "content"), default="content",
                   help="content: probe options with their words masked to their shapes, so only form can tell "
                   "(default); none: the words too")  # fmt: skip
    p.add_argument("--output", default=None, help="write the result as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the probe; 0 on success, 1 when ``--max-excess`` is exceeded, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        mask = args.mask == "content"
        train, test = read_decisions(args.train, args.limit, mask), read_decisions(args.test, args.limit, mask)
    except (ValueError, FileNotFoundError) as exc:
        print(f"data has-probe: {exc}", file=sys.stderr)
        return 2
    if not train or not test:  # e.g. a tiny demo split: say so, do not fail the pipeline
        msg = f"no decisions to probe (train {len(train)}, test {len(test)})"
        if args.output:
            atomic_write_json(Path(args.output), {"train": args.train, "test": args.test, "skipped": msg})
        print(f"data has-probe: {msg}")
        return 0
    res = run_probe(train, test, args.l2)
    ctx = context_report(args.train, args.test, args.l2)
    if args.output:
        atomic_write_json(Path(args.output), {"train": args.train, "test": args.test, "mask": args.mask,
                                              **res.as_dict(), "context": ctx})  # fmt: skip
    print(f"data has-probe: surface ({args.mask} masked) {res.line()}")
    for name in ("query_style_rule", "answer_in_evidence_rule", "context_aware"):
        r = ctx.get(name) or {}
        if r.get("accuracy") is not None:
            print(f"data has-probe: {name.replace('_', '-')} accuracy {r['accuracy']:.3f} vs chance "
                  f"{r['chance']:.3f} on {r.get('decisions', r.get('test_decisions'))} decisions")  # fmt: skip
    print(f"data has-probe: alternatives with defects: {json.dumps(ctx.get('defects'))}")
    print("data has-probe: most original-like features: " + json.dumps(res.top_features[:10], ensure_ascii=False))
    if args.max_excess is not None and res.excess > args.max_excess:
        print(f"data has-probe: excess {res.excess:+.3f} > {args.max_excess}: the original is recognisable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
