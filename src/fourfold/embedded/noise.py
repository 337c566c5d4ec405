"""The converter libraries' own warnings, silenced where fourfold calls them (and only there).

ExecuTorch 1.5, coremltools 9 and torch 2.13 warn on import and on every export about their internals:
importlib.resources' legacy API, pytree's ``LeafSpec``, ``torch.jit.script_method`` / ``trace``,
exir's "experimental API" (a DeprecationWarning). Nothing a user can act on, and errors under pytest's
``filterwarnings = error``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet"]


@contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # includes exir's ExperimentalWarning
        warnings.simplefilter("ignore", FutureWarning)
        yield
