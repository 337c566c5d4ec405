"""A batch job's summary: what it read, scored and rejected, how fast, and its score quantiles.

    >>> s = BatchSummary(output="scores/", fragments=4, resumed=1, rows_resumed=250, rows_in=1000,
    ...                  rows_out=990, rejected=10, seconds=0.5, runtime="native",
    ...                  score_quantiles={"p50": 0.0016, "p90": 0.041, "p99": 0.751})
    >>> s.rows_per_s                    # the 750 rows scored by this run, not the 250 resumed
    1500.0
    >>> print(s.render().splitlines()[1])
    scores: p50 0.0016, p90 0.0410, p99 0.7510

The quantiles are real ones (``histogram.py``: within 2e-5 of ``np.quantile`` over every written score,
resumed fragments included). The parquet sink writes the summary as ``_SUCCESS`` (JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchSummary"]


@dataclass(frozen=True)
class BatchSummary:
    output: str
    fragments: int
    resumed: int  # fragments an earlier run had finished
    rows_resumed: int  # their rows (in ``rows_in``, not in ``rows_per_s``)
    rows_in: int
    rows_out: int
    rejected: int
    seconds: float
    runtime: str  # the runtime that scored every row: native or onnx
    score_quantiles: dict[str, float]
    engine: str = "local"
    quarantine: str | None = None

    @property
    def rows_per_s(self) -> float:
        """Rows read per second by this run (the resumed fragments' rows are not counted)."""
        return (self.rows_in - self.rows_resumed) / self.seconds if self.seconds else 0.0

    def render(self) -> str:
        q = ", ".join(f"{k} {v:.4f}" for k, v in self.score_quantiles.items())
        resumed = f", {self.resumed} resumed ({self.rows_resumed:,} rows)" if self.resumed else ""
        return (
            f"{self.rows_in:,} rows in, {self.rows_out:,} scored, {self.rejected:,} rejected "
            f"({self.fragments} fragments{resumed}) in {self.seconds:.1f}s = "
            f"{self.rows_per_s:,.0f} rows/s on {self.runtime} ({self.engine}) -> {self.output}"
            + (f"\nscores: {q}" if q else "")
            + (f"\nrejected rows: {self.quarantine}" if self.quarantine and self.rejected else "")
        )
