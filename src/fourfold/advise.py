"""Which serving pattern fits (the source's decision tree) and whether a loaded model is fast enough.

Data that must stay on the device overrides the rest of the tree (Embedded), so it is asked first.
The pre-compute question comes before the time-sensitivity one on both branches (human waiting or
not), as in the source document.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

SLA_THRESHOLD_MS = 500.0  # below it a human-facing request is served online
ONLINE_BUDGET_MS = 100.0  # the online target; used when no SLA is given
INFERENCE_SHARE = 0.15  # model inference ~15 ms of a 100 ms online budget
EMBEDDED_BUDGET_MS = 1.0  # embedded target

PATTERNS: tuple[str, ...] = ("online", "batch", "streaming", "embedded")

QUESTIONS: dict[str, str] = {
    "data_must_stay_on_device": "Does data leaving the device create unacceptable risk or cost?",
    "human_waiting": "Is a human waiting for the result?",
    "sla_ms": "What is the latency SLA, in milliseconds?",
    "can_precompute": "Can you pre-compute the results before they are needed?",
    "features_time_sensitive": "Are features time-sensitive (stale within minutes)?",
}


class MissingAnswerError(ValueError):
    """An answer the branch needs is missing; ``field`` names the :class:`Answers` field."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.question = QUESTIONS[field]
        super().__init__(f"missing answer to {self.question!r} (Answers.{field}); the branch walked needs it")


def _check_sla(sla_ms: float | None) -> None:
    if sla_ms is not None and not (math.isfinite(sla_ms) and sla_ms > 0):
        raise ValueError(f"sla_ms must be a finite number of milliseconds > 0, got {sla_ms!r}")


@dataclass(frozen=True)
class Answers:
    """Answers to the tree's questions; ``None`` means not answered.

    ``data_must_stay_on_device`` defaults to ``False`` (data may leave the device); pass ``None`` to
    leave it unanswered, and :func:`advise` then raises :class:`MissingAnswerError` for it.

    >>> Answers(human_waiting=True, sla_ms=80).data_must_stay_on_device
    False
    """

    human_waiting: bool
    sla_ms: float | None = None
    can_precompute: bool | None = None
    features_time_sensitive: bool | None = None
    data_must_stay_on_device: bool | None = False
    has_precomputable_entity_features: bool = False

    def __post_init__(self) -> None:
        _check_sla(self.sla_ms)


@dataclass(frozen=True)
class Hybrid:
    name: str
    reason: str


@dataclass(frozen=True)
class Advice:
    pattern: str  # "online" | "batch" | "streaming" | "embedded"
    reason: str
    hybrids: tuple[Hybrid, ...]
    path: tuple[str, ...]  # the questions walked, each with its answer
    warnings: tuple[str, ...] = ()


HYBRIDS: dict[str, str] = {
    "Batch + Online": "batch computes entity features (user embeddings) nightly; online ranking reads them",
    "Streaming + Online": "streaming updates a real-time feature (recent activity count); online reads it",
    "Embedded + Online": "the embedded model handles common cases; ones it is unsure of cascade to online",
}


def _require(answers: Answers, field: str) -> Any:
    if (value := getattr(answers, field)) is None:
        raise MissingAnswerError(field)
    return value


_T, _O, _E = SLA_THRESHOLD_MS, ONLINE_BUDGET_MS, EMBEDDED_BUDGET_MS
# One reason per leaf of the tree; the leaf's pattern is the text before the first "-".
_REASONS: dict[str, str] = {  # {sla} is filled in by advise()
    "embedded": "Data leaving the device creates unacceptable risk or cost, which overrides the rest of "
    f"the tree: run the model in-process on the device (target < {_E:g} ms).",
    "online": f"A human is waiting and the SLA of {{sla:g}} ms is under {_T:g} ms: "
    f"serve online over HTTP (target < {_O:g} ms).",
    "batch-precompute": f"A human is waiting, the SLA of {{sla:g}} ms is relaxed (>= {_T:g} ms) and "
    "results can be pre-computed: compute them in batch before the request and look them up at "
    "request time.",
    "streaming-human": f"A human is waiting with a relaxed SLA of {{sla:g}} ms (>= {_T:g} ms), results "
    "cannot be pre-computed and features go stale within minutes: the human waits seconds, and "
    "streaming keeps the features fresh for the online model that reads them (Streaming + Online).",
    "online-relaxed": f"A human is waiting with a relaxed SLA of {{sla:g}} ms (>= {_T:g} ms), results "
    "cannot be pre-computed and features are not time-sensitive. The source decision tree leaves this "
    "case unstated; fourfold answers online serving with a relaxed SLA.",
    "batch-scheduled": "No human is waiting and results can be pre-computed: run a scheduled batch job "
    "(fourfold batch --every).",
    "streaming": "No human is waiting, results cannot be pre-computed and features go stale within "
    "minutes: score events as they arrive.",
    "streaming-not-sensitive": "No human is waiting but results cannot be computed ahead, so each event "
    "is scored when it arrives: streaming. Features are not time-sensitive, so seconds of latency or a "
    "frequent fourfold batch --every over the new events both work.",
}


def _walk(a: Answers) -> tuple[str, list[str]]:
    """The leaf reached (a key of ``_REASONS``) and the path walked to it."""
    yes = {True: "yes", False: "no"}
    on_device = bool(_require(a, "data_must_stay_on_device"))
    path = [f"{QUESTIONS['data_must_stay_on_device']} {yes[on_device]}"]
    path.append(f"{QUESTIONS['human_waiting']} {yes[a.human_waiting]}")
    if on_device:
        return "embedded", path
    if a.human_waiting:
        sla = float(_require(a, "sla_ms"))
        path.append(f"Is the latency SLA < {_T:g} ms? {yes[sla < _T]} ({sla:g} ms)")
        if sla < _T:
            return "online", path
    precompute = bool(_require(a, "can_precompute"))
    path.append(f"{QUESTIONS['can_precompute']} {yes[precompute]}")
    if precompute:
        return ("batch-precompute" if a.human_waiting else "batch-scheduled"), path
    sensitive = bool(_require(a, "features_time_sensitive"))
    path.append(f"{QUESTIONS['features_time_sensitive']} {yes[sensitive]}")
    if a.human_waiting:
        return ("streaming-human" if sensitive else "online-relaxed"), path
    return ("streaming" if sensitive else "streaming-not-sensitive"), path


def advise(answers: Answers) -> Advice:
    """Walk the decision tree and recommend a pattern, with the hybrids that also apply.

    Raises :class:`MissingAnswerError` (a ``ValueError``) naming the question when the branch needs
    an answer that is ``None``.

    >>> advise(Answers(human_waiting=True, sla_ms=80)).pattern
    'online'
    >>> advise(Answers(human_waiting=False, can_precompute=True)).pattern
    'batch'
    >>> advise(Answers(human_waiting=False, can_precompute=False, features_time_sensitive=True)).pattern
    'streaming'
    """
    a = answers
    outcome, path = _walk(a)
    pattern = outcome.split("-")[0]
    warnings: list[str] = []
    no_room = outcome == "online" and a.sla_ms is not None and a.sla_ms < _E
    if no_room:
        warnings.append(f"an SLA of {a.sla_ms:g} ms leaves no room for a network hop; consider embedded")
    if outcome == "batch-precompute" and a.features_time_sensitive:
        warnings.append("time-sensitive features: pre-computed results go stale; consider Streaming + Online")
    if outcome == "batch-scheduled" and a.features_time_sensitive:
        warnings.append(
            "time-sensitive features: results pre-computed on a schedule go stale; consider streaming"
        )
    if outcome == "embedded":
        warnings.append(
            "the Embedded + Online cascade would send the uncertain cases (their data) off the device, "
            "so it does not apply"
        )
    online = pattern == "online"
    names = [
        ("Batch + Online", online and (a.has_precomputable_entity_features or bool(a.can_precompute))),
        (
            "Streaming + Online",
            (online or outcome == "streaming-human") and bool(a.features_time_sensitive),
        ),
        # online is never reached with on-device data, so the cascade never takes data off the device
        ("Embedded + Online", no_room and not a.data_must_stay_on_device),
    ]
    hybrids = tuple(Hybrid(name, HYBRIDS[name]) for name, applies in names if applies)
    reason = _REASONS[outcome].format(sla=a.sla_ms or 0.0)
    return Advice(pattern, reason, hybrids, tuple(path), tuple(warnings))


class SignatureLike(Protocol):
    @property
    def feature_names(self) -> Sequence[str]: ...


class PredictorLike(Protocol):
    """What :func:`measure_latency` needs of a predictor."""

    @property
    def signature(self) -> SignatureLike: ...

    def predict(self, batch: Mapping[str, npt.NDArray[Any]]) -> Mapping[str, npt.NDArray[Any]]: ...

    def predict_one(self, row: Mapping[str, float]) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class LatencyReport:
    single_row_p50_ms: float
    single_row_p99_ms: float
    batch_rows: int
    batch_ms: float
    batch_rows_per_s: float


def _columns(p: PredictorLike, sample: Mapping[str, Sequence[float]] | None, n: int) -> dict[str, Any]:
    if sample is None:
        rng = np.random.default_rng(0)
        return {name: rng.standard_normal(n) for name in p.signature.feature_names}
    cols = {name: np.asarray(values, dtype=np.float64) for name, values in sample.items()}
    lengths = {len(col) for col in cols.values()}
    if not cols or len(lengths) != 1 or 0 in lengths:
        raise ValueError("sample must map feature names to non-empty sequences of one common length")
    return {name: np.resize(col, n) for name, col in cols.items()}


def measure_latency(
    predictor: PredictorLike,
    *,
    rows: int = 200,
    batch_size: int = 10_000,
    sample: Mapping[str, Sequence[float]] | None = None,
) -> LatencyReport:
    """Time ``predict_one`` over ``rows`` single rows and ``predict`` once on ``batch_size`` rows.

    Inputs are random float64 values for every feature name of the signature, or ``sample`` (its
    rows cycled). Both calls are warmed up first.

    >>> report = measure_latency(predictor, rows=50, batch_size=1_000)  # doctest: +SKIP
    >>> report.single_row_p99_ms  # doctest: +SKIP
    0.042
    """
    if rows < 1 or batch_size < 1:
        raise ValueError(f"rows and batch_size must be >= 1, got rows={rows}, batch_size={batch_size}")
    singles = _columns(predictor, sample, rows)
    batch = _columns(predictor, sample, batch_size)
    row_dicts = [{name: float(col[i]) for name, col in singles.items()} for i in range(rows)]
    for row in row_dicts[:5]:
        predictor.predict_one(row)
    predictor.predict(batch)
    durations = np.empty(rows, dtype=np.float64)
    for i, row in enumerate(row_dicts):
        start = time.perf_counter_ns()
        predictor.predict_one(row)
        durations[i] = time.perf_counter_ns() - start
    start = time.perf_counter_ns()
    predictor.predict(batch)
    batch_ns = max(time.perf_counter_ns() - start, 1)
    p50, p99 = (float(v) / 1e6 for v in np.percentile(durations, [50, 99]))
    return LatencyReport(p50, p99, batch_size, batch_ns / 1e6, batch_size * 1e9 / batch_ns)


def check_latency(advice: Advice, report: LatencyReport, sla_ms: float | None = None) -> tuple[str, ...]:
    """Warnings when the measured latency cannot fit the advised pattern's budget.

    Online: p99 single-row latency must fit the model-inference share (15 %) of the SLA, or of the
    100 ms online budget when no SLA is given. Embedded: p99 must be under 1 ms. Batch and streaming
    have no per-row budget here.

    >>> fast = LatencyReport(0.1, 0.2, 10_000, 5.0, 2e6)
    >>> check_latency(advise(Answers(human_waiting=True, sla_ms=80)), fast, 80)
    ()
    """
    _check_sla(sla_ms)
    p99 = report.single_row_p99_ms
    if advice.pattern == "online":
        budget = ONLINE_BUDGET_MS if sla_ms is None else sla_ms
        limit = INFERENCE_SHARE * budget
        if p99 > limit:
            return (
                f"p99 single-row latency {p99:.3f} ms exceeds the model-inference share of the SLA: "
                f"{limit:.3f} ms ({INFERENCE_SHARE:.0%} of {budget:g} ms)",
            )
    elif advice.pattern == "embedded" and p99 > EMBEDDED_BUDGET_MS:
        return (f"p99 single-row latency {p99:.3f} ms exceeds the embedded limit of {_E:g} ms",)
    return ()
