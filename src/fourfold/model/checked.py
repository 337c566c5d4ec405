"""What the row check gives back: the good rows' matrix, which rows are good, and for each bad row the
first :class:`Rule` it breaks - and the error :meth:`fourfold.Predictor.predict` raises for it.

    >>> # c = predictor.check(batch); c.x, c.ok, c.reason(3), c.rejections(), c.error()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fourfold.errors import FeatureTypeError, InputError, MissingFeatureError, NullFeatureError

__all__ = ["Checked", "Kind", "Rule"]

Kind = Literal["required", "missing", "type", "null", "infinite", "range", "integer", "boolean"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One way a row can be refused: the column it looks at, its kind and the reason a refused row gets."""

    column: str
    kind: Kind
    reason: str
    index: int = -1  # the feature's position in the signature (-1: a required column)


@dataclass(frozen=True)
class Checked:
    """A checked batch: the good rows' matrix ``x`` (in input order, the runtime's dtype), which rows
    are good (``ok``), and for each bad row its first broken :class:`Rule` (``codes``: an index into
    ``rules``, -1 for a good row; ``None`` when every row is good)."""

    x: np.ndarray
    ok: np.ndarray
    codes: np.ndarray | None
    rules: tuple[Rule, ...]
    details: Mapping[int, str] = field(default_factory=dict)  # row -> reason naming the value (type rule)
    model: str = "the model"

    @property
    def rows(self) -> int:
        return len(self.ok)

    @property
    def rejected(self) -> int:
        return 0 if self.codes is None else int(len(self.ok) - np.count_nonzero(self.ok))

    def reason(self, row: int) -> str | None:
        """Row ``row``'s reason, or None when it is good."""
        if self.codes is None or self.codes[row] < 0:
            return None
        return self.details.get(row) or self.rules[int(self.codes[row])].reason

    def reasons(self) -> np.ndarray | None:
        """Every row's reason (an object array, None for a good row), or None when every row is good."""
        if self.codes is None:
            return None
        table = np.array([r.reason for r in self.rules] + [None], dtype=object)
        out: np.ndarray = table[self.codes]  # -1 picks the trailing None
        for row, text in self.details.items():
            out[row] = text
        return out

    def rejections(self) -> list[tuple[int, str]]:
        """``(row, reason)`` of every bad row, in row order."""
        if self.codes is None:
            return []
        return [(int(i), self.reason(int(i)) or "") for i in np.flatnonzero(self.codes >= 0)]

    def error(self) -> InputError | None:
        """The error :meth:`fourfold.Predictor.predict` raises: the first bad row's rule, naming every row
        that breaks the same rule; None when every row is good."""
        if self.codes is None:
            return None
        first = int(np.flatnonzero(self.codes >= 0)[0])
        code = int(self.codes[first])
        rule = self.rules[code]
        rows = [int(r) for r in np.flatnonzero(self.codes == code)[:100]]
        if rule.kind == "null":  # one row: the reason itself, as every pattern gives it
            if len(self.ok) == 1:
                return NullFeatureError.because(rule.column, rule.reason, rows=rows)
            return NullFeatureError(rule.column, rows)
        names = [r.column for r in self.rules if r.kind == "missing"]
        if rule.kind == "missing" and len(self.ok) == 1:
            return MissingFeatureError(rule.column, names, model=self.model)
        count = int(np.count_nonzero(self.codes == code))
        text = self.details.get(first) or rule.reason
        if len(self.ok) > 1:  # one row needs no row number
            text += f" in row {first}" if count == 1 else f" in {count} rows (row {first}, ...)"
        if rule.kind == "required":
            return InputError(text)
        return FeatureTypeError.because(rule.column, text)
