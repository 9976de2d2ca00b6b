"""Conditional logistic regression over the options of multiple-choice decisions (the tell probes' model).

A decision is a run of option rows in a design matrix: ``offsets`` marks where each decision's rows start (plus the
end) and ``targets`` holds the row of each decision's original option. The model scores every row with ``x @ w``
and takes a softmax within each decision. Used by :mod:`~data_tools.synthesis.has.probe` (wording features) and
:mod:`~data_tools.synthesis.has.probe_context` (context features).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, sparse


def group_softmax(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Softmax of ``scores`` within each decision (rows ``offsets[i]:offsets[i + 1]``)."""
    starts = offsets[:-1]
    sizes = np.diff(offsets)
    mx = np.repeat(np.maximum.reduceat(scores, starts), sizes)
    e = np.exp(scores - mx)
    return e / np.repeat(np.add.reduceat(e, starts), sizes)


def fit_conditional_logit(
    x: sparse.csr_matrix, offsets: np.ndarray, targets: np.ndarray, l2: float = 1.0, max_iter: int = 300
) -> np.ndarray:
    """Weights maximising sum over decisions of log softmax(x w)[original] - l2/2 |w|^2 (L-BFGS)."""
    y = np.zeros(x.shape[0])
    y[targets] = 1.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = x @ w
        p = group_softmax(s, offsets)
        nll = -float(np.log(np.maximum(p[targets], 1e-300)).sum()) + 0.5 * l2 * float(w @ w)
        return nll, x.T @ (p - y) + l2 * w

    res = optimize.minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x


def choice_accuracy(scores: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> float:
    """Share of decisions whose top-scoring row is the original (NaN without decisions)."""
    hits = [int(np.argmax(scores[a:b])) + a == t for a, b, t in zip(offsets[:-1], offsets[1:], targets)]
    return float(np.mean(hits)) if hits else float("nan")
