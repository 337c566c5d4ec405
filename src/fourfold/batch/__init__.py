"""The batch pattern: score a table in bounded memory, in parallel, committed atomically, resumable.

>>> # from fourfold.batch import BatchOptions, run_batch
>>> # summary = run_batch(model="models:/churn/production", input="users/", output="scores/",
>>> #                     id_cols=("user_id",), partition="date=2025-04-15")
>>> # summary = run_batch(BatchOptions(model=..., input=..., output=..., engine="spark"))
"""

from __future__ import annotations

from fourfold.batch.job import run_batch
from fourfold.batch.options import BatchOptions
from fourfold.batch.summary import BatchSummary
from fourfold.errors import JobFailed

__all__ = ["BatchOptions", "BatchSummary", "JobFailed", "run_batch"]
