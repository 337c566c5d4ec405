"""The score histogram behind a job's summary: fine enough for real quantiles, mergeable across record
batches, fragments, processes and resumed runs.

    >>> import numpy as np
    >>> h = ScoreHistogram()
    >>> h.add(np.array([0.1, 0.2, 0.3, 0.9]))
    >>> round(h.quantile(0.5), 4)
    0.25

65,536 uniform bins on ``[0, 1]`` (scores outside are clipped in, NaN is not counted). A quantile is
``np.quantile``'s (linear interpolation between order statistics), each order statistic placed by
linear interpolation inside its bin: the absolute error is below one bin, ``1 / 65,536 < 2e-5``. The
counts are dense in memory (``np.bincount``, one 512 KiB array per fragment in flight) and sparse on
disk (only the non-empty bins, in a fragment's ``.done`` marker).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BINS", "QUANTILES", "ScoreHistogram"]

BINS = 65_536
QUANTILES = (0.5, 0.9, 0.99)


class ScoreHistogram:
    """Counts of scores in :data:`BINS` bins of ``[0, 1]``."""

    __slots__ = ("counts",)

    def __init__(self, counts: np.ndarray | None = None) -> None:
        self.counts = np.zeros(BINS, dtype=np.int64) if counts is None else counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, scores: np.ndarray) -> None:
        s = np.asarray(scores, dtype=np.float64)
        s = s[~np.isnan(s)]
        if not len(s):
            return
        bins = np.minimum((np.clip(s, 0.0, 1.0) * BINS).astype(np.int64), BINS - 1)
        self.counts += np.bincount(bins, minlength=BINS)

    def merge(self, other: ScoreHistogram) -> None:
        self.counts += other.counts

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the counted scores (NaN when there are none)."""
        n = self.total
        if not n:
            return float("nan")
        h = (n - 1) * q
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        cum = np.cumsum(self.counts)
        a, b = self._order_statistic(cum, lo), self._order_statistic(cum, hi)
        return a + (h - lo) * (b - a)

    def _order_statistic(self, cum: np.ndarray, k: int) -> float:
        """The ``k``-th smallest score (0-based), spread evenly inside its bin."""
        b = int(np.searchsorted(cum, k, side="right"))
        inside = int(self.counts[b])
        rank = k - (int(cum[b]) - inside)
        return (b + (rank + 0.5) / inside) / BINS

    def quantiles(self) -> dict[str, float]:
        """``{"p50": ..., "p90": ..., "p99": ...}``, or ``{}`` when no score was counted."""
        if not self.total:
            return {}
        return {f"p{round(q * 100)}": self.quantile(q) for q in QUANTILES}

    # -- on disk ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        bins = np.flatnonzero(self.counts)
        return {"bins": bins.tolist(), "counts": self.counts[bins].tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreHistogram:
        counts = np.zeros(BINS, dtype=np.int64)
        counts[np.asarray(data["bins"], dtype=np.int64)] = np.asarray(data["counts"], dtype=np.int64)
        return cls(counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoreHistogram) and bool(np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<ScoreHistogram {self.total} scores>"
