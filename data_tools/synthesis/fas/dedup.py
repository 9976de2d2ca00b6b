"""Near-duplicate question removal with MinHash LSH (datasketch)."""

from __future__ import annotations

import re

import numpy as np
from datasketch import MinHash, MinHashLSH

_TOKEN = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams (lower-cased) of ``text``; short texts fall back to their words."""
    words = _TOKEN.findall(text.lower())
    if len(words) < n:
        return set(words)
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


class NearDuplicateFilter:
    """Keeps an LSH index of accepted texts and tells whether a new text is a near duplicate of one of them.

    The LSH bands are tuned to favour recall (few missed duplicates); its candidates are then confirmed by the
    MinHash Jaccard estimate, which removes the extra false positives.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, shingle: int = 3) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
        self._hashes: dict[str, np.ndarray] = {}  # signatures only (num_perm uint64 per text)

    def _minhash(self, text: str) -> MinHash:
        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text, self.shingle)] or [b""])
        return m

    def duplicate_of(self, text: str) -> str | None:
        """Key of an indexed near-duplicate of ``text``, or ``None``."""
        m = self._minhash(text)
        hits = [k for k in self._lsh.query(m) if float(np.mean(self._hashes[k] == m.hashvalues)) >= self.threshold]
        return min(hits) if hits else None

    def add(self, key: str, text: str) -> None:
        """Index ``text`` under ``key`` (a key can be added once)."""
        if key in self._hashes:
            return
        m = self._minhash(text)
        self._lsh.insert(key, m)
        self._hashes[key] = m.hashvalues.copy()

    def check_and_add(self, key: str, text: str) -> str | None:
        """Return the key of a near duplicate, or index ``text`` and return ``None``."""
        dup = self.duplicate_of(text)
        if dup is None:
            self.add(key, text)
        return dup

    def __len__(self) -> int:
        return len(self._hashes)
