"""The one row check: which rows of a batch a model can score, and for every other row the one reason why.

Every pattern checks through here - the online server (one row, a list of rows, OIP tensors), the batch
engines (record batches; the Spark engine runs the same rules as Spark SQL), the Python API - so a row is
refused, and for the same reason, everywhere. The Spark SQL conditions and the OpenAPI document's bounds
are generated from these rules (:mod:`fourfold.model.expressions`); the outcome is a
:class:`~fourfold.model.checked.Checked`.

The rules, per feature in the signature's order (a row's reason is its first broken rule):

======== ============================================================== ==========================
rule     a value breaks it when                                          applies to
======== ============================================================== ==========================
missing  the field is absent (rows given as mappings)                    every feature
type     it is not a number: text, a boolean for a numeric feature ...   rows given as mappings
null     it is null or NaN                                               features not ``nullable``
infinite it is +-inf                                                     every feature
range    ``|x| >= 2**128 - 2**103`` (float32 rounds it to inf)           models taking float32
integer  it is not a whole number within the dtype's range               int8 ... int64 features
boolean  it is not 0 or 1                                                bool features
======== ============================================================== ==========================

Columns the caller names as ``required`` (ids, an entity key) come first: a null there is ``missing``.
A column whose type cannot hold the feature at all (text, booleans for a number) refuses the whole batch
(:func:`fourfold.model.columns.column_type_error`).

    >>> from fourfold.model.signature import Feature, Signature
    >>> check = RowCheck(Signature.for_task("binary", [Feature("a"), Feature("b", "int8")]), np.float64)
    >>> c = check.check({"a": [1.0, float("nan"), 2.0], "b": [1, 2, 300]})
    >>> c.ok.tolist(), c.reason(1), c.reason(2)
    ([True, False, False], "feature 'a' is null or NaN", "feature 'b' must be a whole number in [-128, 127]")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from fourfold.errors import (
    FeatureTypeError,
    InputError,
    MissingFeatureError,
    ShapeError,
    UnknownFeatureError,
)
from fourfold.model.checked import Checked, Kind, Rule
from fourfold.model.columns import as_columns, column_names, null_mask, shown
from fourfold.model.signature import Feature, Signature

__all__ = ["F32_OVERFLOW", "INT_RANGES", "RowCheck", "bounds"]

#: the smallest |float64| that float32 rounds to infinity (FLT_MAX + half an ulp; the tie goes to even)
F32_OVERFLOW = 2.0**128 - 2.0**103
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
_INF = math.inf


class RowCheck:
    """The rules for one signature and one runtime input dtype (a :class:`fourfold.Predictor` holds one).

    ``check`` takes any batch; ``one`` is the low-latency path for a single mapping and raises the
    error."""

    def __init__(
        self,
        signature: Signature,
        dtype: type[np.floating[Any]] | np.dtype[Any],
        *,
        strict: bool = False,
        model: str = "the model",
    ) -> None:
        self.signature = signature
        self.dtype = np.dtype(dtype)
        self.strict = strict
        self.model = model
        self.names = signature.feature_names
        self.limit = F32_OVERFLOW if self.dtype == np.float32 else _INF
        self._dtypes = {f.name: f.dtype for f in signature.inputs}
        rules: list[Rule] = []
        for j, f in enumerate(signature.inputs):
            rules += self.feature_rules(f, j)
        self._rules = tuple(rules)
        self._by_kind: dict[tuple[int, Kind], int] = {(r.index, r.kind): i for i, r in enumerate(rules)}
        self._special = frozenset(
            j for j, f in enumerate(signature.inputs) if f.dtype in INT_RANGES or f.dtype == "bool"
        )
        self._required_cache: dict[tuple[str, ...], tuple[Rule, ...]] = {}
        # the one-row path: per feature (name, nullable, int range or None, bool feature)
        self._plan = [(f.name, f.nullable, bounds(f.dtype), f.dtype == "bool") for f in signature.inputs]

    # -- the rules -----------------------------------------------------------------------------------------
    def feature_rules(self, f: Feature, j: int) -> list[Rule]:
        n = repr(f.name)
        rules = [
            Rule(f.name, "missing", f"feature {n} is missing", j),
            Rule(f.name, "type", f"feature {n} must be a number", j),
        ]
        if not f.nullable:
            rules.append(Rule(f.name, "null", f"feature {n} is null or NaN", j))
        rules.append(Rule(f.name, "infinite", f"feature {n} is infinite (or beyond the float64 range)", j))
        if self.limit < _INF:
            rules.append(
                Rule(f.name, "range", f"feature {n} is beyond the float32 range of the model's input "
                     f"(|x| < {self.limit:.8g})", j)
            )  # fmt: skip
        if f.dtype in INT_RANGES:
            lo, hi = INT_RANGES[f.dtype]
            rules.append(Rule(f.name, "integer", f"feature {n} must be a whole number in [{lo}, {hi}]", j))
        elif f.dtype == "bool":
            rules.append(Rule(f.name, "boolean", f"feature {n} must be 0 or 1 (a boolean)", j))
        return rules

    def rules(self, required: Sequence[str] = ()) -> tuple[Rule, ...]:
        """Every rule in the order they are tried: the required columns, then the features'."""
        key = tuple(required)
        cached = self._required_cache.get(key)
        if cached is None:
            head = tuple(Rule(c, "required", f"missing {c!r}") for c in key)
            cached = self._required_cache[key] = head + self._rules
        return cached

    # -- checking ------------------------------------------------------------------------------------------
    def check(self, batch: Any, required: Sequence[str] = ()) -> Checked:
        """Check any batch: Arrow table / record batch, pandas DataFrame, dict of arrays (or lists), a list
        of row mappings, or a 2-D array in the signature's order (``required`` needs named columns)."""
        if isinstance(batch, np.ndarray):
            return self._check_array(batch)
        if isinstance(batch, list | tuple) and (not batch or isinstance(batch[0], Mapping)):
            return self.check_rows(batch, required)
        present = column_names(batch)
        for name in [*required, *self.names]:
            if name not in present:
                if name in self.names:
                    raise MissingFeatureError(name, list(self.names), model=self.model)
                raise InputError(f"the batch has no column {name!r}; it has: {', '.join(present)}")
        if self.strict and len(present) != len(self.names):
            unknown = [c for c in present if self.signature.index(c) is None and c not in required]
            if unknown:
                raise UnknownFeatureError(unknown, list(self.names), model=self.model)
        columns = as_columns(batch, self.names, self._dtypes)
        n = len(columns[self.names[0]])
        x = np.empty((n, len(self.names)), dtype=np.float64)
        for j, name in enumerate(self.names):
            col = columns[name]
            if col.ndim != 1 or len(col) != n:
                raise ShapeError(
                    f"feature {name!r} has shape {col.shape}; every feature must be 1-D with {n} rows"
                )
            x[:, j] = col
        pre = [null_mask(batch, c) for c in required] if required else []
        return self._finish(x, self.rules(required), pre, None, {})

    def check_rows(self, rows: Sequence[Mapping[str, Any]], required: Sequence[str] = ()) -> Checked:
        """Rows given as mappings (JSON objects): a missing field or a value of the wrong type is a
        reason for that row, not an error for the whole batch."""
        n, width = len(rows), len(self.names)
        x = np.full((n, width), np.nan)
        flags = np.zeros((n, width), dtype=np.int8)  # 1 missing, 2 type
        details: dict[int, str] = {}
        pre = [np.zeros(n, dtype=bool) for _ in required]
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(
                    f"row {i} must be a mapping of feature name to value, got {type(row).__name__}"
                )
            if self.strict:
                self._refuse_unknown(row, required)
            for k, c in enumerate(required):
                v = row.get(c)
                pre[k][i] = v is None or (isinstance(v, float) and v != v)
            for j, (name, _, _, is_bool) in enumerate(self._plan):
                try:
                    v = row[name]
                except KeyError:
                    flags[i, j] = 1
                    continue
                value = _number(v, is_bool)
                if value is None:
                    flags[i, j] = 2
                    details.setdefault(i * width + j, _type_reason(name, v, is_bool))
                else:
                    x[i, j] = value
        return self._finish(x, self.rules(required), pre, flags, details)

    def one(self, row: Mapping[str, Any]) -> np.ndarray:
        """The low-latency path: one mapping -> a ``[1, features]`` matrix in the runtime's dtype, or the
        :class:`InputError` :meth:`check` gives the same row (a clean row never builds a :class:`Checked`)."""
        if not isinstance(row, Mapping):
            raise InputError(
                f"a row must be a mapping of feature name to value (a dict), got {type(row).__name__}; "
                "use predict() for arrays and tables"
            )
        if self.strict and len(row) != len(self.names):
            self._refuse_unknown(row, ())
        values: list[float] = []
        append = values.append
        limit = self.limit
        for name, nullable, ints, is_bool in self._plan:
            try:
                v = row[name]
            except KeyError:
                raise MissingFeatureError(name, list(self.names), model=self.model) from None
            if type(v) is float:
                f = v
            else:
                maybe = _number(v, is_bool)
                if maybe is None:
                    self._refuse_one(row)
                f = maybe
            if not _clean(f, nullable, ints, is_bool, limit):
                self._refuse_one(row)
            append(f)
        return np.array(values, dtype=self.dtype).reshape(1, len(values))

    def _refuse_one(self, row: Mapping[str, Any]) -> NoReturn:
        checked = self.check_rows([row])
        err = checked.error()
        if err is None:  # the fast path and the rules disagree: a bug, never a silent score
            raise AssertionError(f"the one-row check refused a row the rules accept: {row!r}")
        raise err

    def _refuse_unknown(self, row: Mapping[str, Any], required: Sequence[str]) -> None:
        unknown = [str(c) for c in row if self.signature.index(str(c)) is None and c not in required]
        if unknown:
            raise UnknownFeatureError(unknown, list(self.names), model=self.model)

    def _check_array(self, batch: np.ndarray) -> Checked:
        if batch.ndim != 2:
            raise ShapeError(f"an array batch must be 2-D [rows, features]; got {batch.ndim}-D")
        if batch.shape[1] != len(self.names):
            raise ShapeError(
                f"a 2-D array must have {len(self.names)} columns in the signature's order "
                f"({', '.join(self.names)}); got {batch.shape[1]}"
            )
        if batch.dtype.kind not in "fiu" and not (batch.dtype.kind == "b" and self._all_bool()):
            raise FeatureTypeError("(2-D array)", "numeric", f"dtype {batch.dtype}")
        return self._finish(np.asarray(batch, dtype=np.float64), self.rules(), [], None, {})

    def _all_bool(self) -> bool:
        return all(f.dtype == "bool" for f in self.signature.inputs)

    def _finish(
        self,
        x: np.ndarray,
        rules: tuple[Rule, ...],
        pre: list[np.ndarray],
        flags: np.ndarray | None,
        details: dict[int, str],
    ) -> Checked:
        n = len(x)
        codes = self._codes(x, rules, pre, flags)
        if codes is None:
            good = x if self.dtype == np.float64 else x.astype(self.dtype)
            return Checked(np.ascontiguousarray(good), np.ones(n, dtype=bool), None, rules, model=self.model)
        ok = codes < 0
        row_details: dict[int, str] = {}
        if details:  # a type reason names its value: keep it for the rows whose first rule it is
            width = len(self.names)
            for cell, text in details.items():
                i, j = divmod(cell, width)
                code = codes[i]
                if code >= 0 and rules[code].kind == "type" and rules[code].index == j:
                    row_details[i] = text
        good = np.ascontiguousarray(x[ok], dtype=self.dtype)
        return Checked(good, ok, codes, rules, row_details, self.model)

    def _codes(
        self, x: np.ndarray, rules: tuple[Rule, ...], pre: list[np.ndarray], flags: np.ndarray | None
    ) -> np.ndarray | None:
        """Each row's first broken rule (-1 for none), or None when no row breaks any."""
        n = len(x)
        offset = len(rules) - len(self._rules)  # the required columns' rules come first
        masks: list[tuple[int, np.ndarray]] = [(k, m) for k, m in enumerate(pre) if m.any()]
        with np.errstate(invalid="ignore", over="ignore"):
            width = x.shape[1]
            finite_cols = np.asarray(np.isfinite(x).all(axis=0), dtype=bool)
            beyond = np.zeros(width, dtype=bool)
            if self.limit < _INF and n:
                beyond = np.asarray((np.abs(x) >= self.limit).any(axis=0), dtype=bool)
            flagged = np.zeros(width, dtype=bool)
            if flags is not None and n:
                flagged = np.asarray(flags.any(axis=0), dtype=bool)
            for j in range(width):
                special = j in self._special
                if finite_cols[j] and not beyond[j] and not flagged[j] and not special:
                    continue
                col = x[:, j]
                by = self._by_kind
                if flagged[j]:
                    assert flags is not None
                    masks.append((offset + by[(j, "missing")], flags[:, j] == 1))
                    masks.append((offset + by[(j, "type")], flags[:, j] == 2))
                if not finite_cols[j]:
                    nan = np.isnan(col)
                    if (j, "null") in by:
                        masks.append((offset + by[(j, "null")], nan))
                    masks.append((offset + by[(j, "infinite")], np.isinf(col)))
                if beyond[j]:
                    masks.append((offset + by[(j, "range")], np.abs(col) >= self.limit))
                if special:
                    kind: Kind = "integer" if (j, "integer") in by else "boolean"
                    if kind == "integer":
                        lo, hi = bounds(self.signature.inputs[j].dtype) or (0.0, 0.0)
                        bad = (col != np.rint(col)) | (col < lo) | (col > hi)
                    else:
                        bad = (col != 0.0) & (col != 1.0)
                    masks.append((offset + by[(j, kind)], bad & np.isfinite(col)))
        masks = [(code, m) for code, m in masks if m.any()]
        if not masks:
            return None
        codes = np.full(n, len(rules), dtype=np.int32)
        for code, m in masks:  # the smallest code - the first rule in order - wins
            np.minimum(codes, np.where(m, code, len(rules)), out=codes)
        codes[codes == len(rules)] = -1
        return codes


def _number(v: Any, is_bool: bool) -> float | None:
    """A value as a float (None -> NaN), or None when it is not a number this feature takes."""
    t = type(v)
    if t is float:
        return v  # type: ignore[no-any-return]
    if v is None:
        return math.nan
    if t is bool or t is np.bool_:
        return float(v) if is_bool else None
    if t is int or (isinstance(v, np.number) and not isinstance(v, np.datetime64 | np.timedelta64)):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    return None


def _type_reason(name: str, v: Any, is_bool: bool) -> str:
    return f"feature {name!r} must be {'0 or 1' if is_bool else 'a number'}, got {shown(v)}"


def _clean(f: float, nullable: bool, ints: tuple[float, float] | None, is_bool: bool, limit: float) -> bool:
    """The rules on one value, as :meth:`RowCheck._codes` applies them to a column (property-tested)."""
    if f != f:
        return nullable
    if not -limit < f < limit:
        return False
    if ints is not None:
        return f == round(f) and ints[0] <= f <= ints[1]
    return not is_bool or f == 0.0 or f == 1.0


def bounds(dtype: str) -> tuple[float, float] | None:
    """An integer dtype's range as the float64 values every check compares with (int64's upper bound is
    2**63 as a double: the same number in NumPy, Python and Spark SQL)."""
    r = INT_RANGES.get(dtype)
    return None if r is None else (float(r[0]), float(r[1]))
