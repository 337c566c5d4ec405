"""Test support for batch resume: a job killed midway, with exactly one fragment finished."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fourfold.batch import run_batch
from fourfold.model.predictor import Predictor


def kill_midway(kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``kw`` (one batch per fragment, one model thread) and let the model fail on its second call,
    once fragment 0's marker is written: a run to resume, with exactly one finished fragment."""
    staging = Path(kw["output"]).parent / f".staging-{Path(kw['output']).name}"
    real = Predictor.score
    calls: list[int] = []

    def flaky(self: Predictor, x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        if len(calls) == 2:
            deadline = time.monotonic() + 30
            while not (staging / "part-00000.done").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # the writer finishes fragment 0 meanwhile
            raise MemoryError("killed midway")
        return real(self, x)

    with monkeypatch.context() as m:
        m.setattr(Predictor, "score", flaky)
        with pytest.raises(MemoryError):
            run_batch(**kw)
    assert sorted(p.name for p in staging.glob("part-*.done")) == ["part-00000.done"]
    return staging
