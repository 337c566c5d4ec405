"""The batch pattern: score a table in bounded memory, in parallel, committed atomically, resumable."""

from __future__ import annotations

from fourfold.batch.job import BatchJob, BatchSummary, JobFailed, run_batch

__all__ = ["BatchJob", "BatchSummary", "JobFailed", "run_batch"]
