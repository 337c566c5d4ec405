"""The contract between a batch job and an engine: a small frozen :class:`Plan` in, one
:class:`~fourfold.batch.rows.Counts` per unit of work out.

    >>> # plan = Plan(predictor, source, todo=source.fragments, staging=Path(".staging-out"),
    >>> #             inputs=inputs, batch_rows=65_536)
    >>> # counts = LocalEngine(workers=1, threads=None, progress=False).run(plan)
    >>> # counts = SparkEngine(master="local[*]").run(plan)

An engine writes ``part-*.parquet`` (the output rows: ids, the model's outputs, ``model_version``) and
``_quarantine/part-*.parquet`` (every input column + ``_reason``) into ``plan.staging``, and nothing else
anywhere; the job around it (``job.py``) resumes, counts, enforces ``--max-rejected`` and commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fourfold.batch.inputs import BatchInputs
from fourfold.batch.rows import Counts
from fourfold.batch.sources import Fragment, Source
from fourfold.model.predictor import Predictor

__all__ = ["Engine", "Plan"]


@dataclass(frozen=True)
class Plan:
    """One job's work for an engine."""

    predictor: Predictor  # loaded once by the job; ``predictor.runtime`` is the concrete runtime
    source: Source
    todo: tuple[Fragment, ...]  # the fragments still to score (all of them unless resumed)
    staging: Path
    inputs: BatchInputs  # which columns give the model its features (and the ids, key, as-of time)
    batch_rows: int


class Engine(Protocol):
    @property
    def name(self) -> str:
        """``"local"`` or ``"spark"``, for the summary."""
        ...

    def run(self, plan: Plan) -> list[Counts]:
        """Score ``plan.todo`` into ``plan.staging``; the counts of what it scored."""
        ...
