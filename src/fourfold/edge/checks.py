"""The input check of the edge runtime: the core's row rules (:mod:`fourfold.model.check`) for one mapping
and for a 2-D array, with the same messages, written without fourfold so a client can vendor it.

A test holds every message to the core's, value by value and slot by slot
(``tests/edge/test_checks.py``): a client that vendors this package and a server running fourfold refuse
the same input with the same words.

    >>> c = RowCheck([{"name": "amount"}, {"name": "hour", "dtype": "int64"}], np.float32)
    >>> c.one_into({"amount": 3.5, "hour": 4}, np.empty((1, 2), np.float32)).tolist()
    [[3.5, 4.0]]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

__all__ = ["F32_OVERFLOW", "EdgeInputError", "RowCheck"]

#: the smallest |x| that float32 rounds to infinity (the core's bound)
F32_OVERFLOW = 2.0**128 - 2.0**103

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


class EdgeInputError(ValueError):
    """The input does not match the bundle's signature (the core's ``InputError``, status 422).
    ``feature`` names the field when one is at fault."""

    status = 422

    def __init__(self, message: str, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


def _shown(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


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


class RowCheck:
    """The rules for one signature (``inputs``: the manifest's list of ``{name, dtype, nullable}``) and
    one runtime input dtype."""

    def __init__(
        self,
        inputs: Sequence[Mapping[str, Any]],
        dtype: type[np.floating[Any]] | np.dtype[Any],
        *,
        strict: bool = False,
        model: str = "the model",
    ) -> None:
        self.names = tuple(str(f["name"]) for f in inputs)
        self.strict = strict
        self.model = model
        self.limit = F32_OVERFLOW if np.dtype(dtype) == np.float32 else math.inf
        self._plan: list[tuple[str, bool, tuple[float, float] | None, bool]] = []
        for f in inputs:
            kind = str(f.get("dtype", "float64"))
            ints = _INT_RANGES.get(kind)
            self._plan.append(
                (
                    str(f["name"]),
                    bool(f.get("nullable", False)),
                    None if ints is None else (float(ints[0]), float(ints[1])),
                    kind == "bool",
                )
            )
        self._kinds = tuple(str(f.get("dtype", "float64")) for f in inputs)
        self._fast = _compile_fast(self._plan, np.dtype(dtype), strict)

    # -- one mapping -----------------------------------------------------------------------------------------
    def one_into(self, row: Mapping[str, Any], out: np.ndarray) -> np.ndarray:
        """Check one mapping and write it into ``out`` (``[1, features]``, C-contiguous, the dtype the
        check was built for); the error names the field."""
        if type(row) is dict and self._fast(row, out):
            return out
        return self._one_into(row, out)

    def _one_into(self, row: Mapping[str, Any], out: np.ndarray) -> np.ndarray:
        if not isinstance(row, Mapping):
            raise EdgeInputError(
                f"a row must be a mapping of feature name to value (a dict), got {type(row).__name__}; "
                "use predict() for arrays and tables"
            )
        if self.strict and len(row) != len(self.names):
            self._refuse_unknown(row)
        dest = out[0]
        limit = self.limit
        for j, (name, nullable, ints, is_bool) in enumerate(self._plan):
            try:
                v = row[name]
            except KeyError:
                needs = ", ".join(self.names)
                raise EdgeInputError(
                    f"feature {name!r} is missing from the input; {self.model} needs: {needs}", name
                ) from None
            f = v if type(v) is float else _number(v, is_bool)
            if f is None:
                what = "0 or 1" if is_bool else "a number"
                self._refuse(row, f"feature {name!r} must be {what}, got {_shown(v)}", name)
            elif f != f:
                if not nullable:
                    self._refuse(row, f"feature {name!r} is null or NaN", name)
            elif not -limit < f < limit:
                self._refuse(row, self._range_reason(name, f), name)
            elif ints is not None and not (f == round(f) and ints[0] <= f <= ints[1]):
                lo, hi = _INT_RANGES[self._kinds[j]]
                self._refuse(row, f"feature {name!r} must be a whole number in [{lo}, {hi}]", name)
            elif is_bool and f != 0.0 and f != 1.0:
                self._refuse(row, f"feature {name!r} must be 0 or 1 (a boolean)", name)
            dest[j] = f
        return out

    def _refuse(self, row: Mapping[str, Any], message: str, name: str) -> NoReturn:
        if self.strict:  # the core names unknown fields before any value's fault
            self._refuse_unknown(row)
        raise EdgeInputError(message, name)

    def _range_reason(self, name: str, f: float) -> str:
        if math.isinf(f) or self.limit == math.inf:
            return f"feature {name!r} is infinite (or beyond the float64 range)"
        return f"feature {name!r} is beyond the float32 range of the model's input (|x| < {self.limit:.8g})"

    def _refuse_unknown(self, row: Mapping[str, Any]) -> None:
        known = set(self.names)
        unknown = [str(c) for c in row if str(c) not in known]
        if unknown:
            raise EdgeInputError(
                f"unknown feature(s) {', '.join(repr(f) for f in unknown)} in strict mode; "
                f"{self.model} accepts only: {', '.join(self.names)}"
            )

    # -- a matrix ------------------------------------------------------------------------------------------
    def array(self, batch: Any, dtype: type[np.floating[Any]]) -> np.ndarray:
        """Check a ``[rows, features]`` array in the signature's order; the first bad row's error, as the
        core words it for an array batch."""
        x = np.asarray(batch)
        if x.ndim != 2:
            raise EdgeInputError(f"an array batch must be 2-D [rows, features]; got {x.ndim}-D")
        if x.shape[1] != len(self.names):
            raise EdgeInputError(
                f"a 2-D array must have {len(self.names)} columns in the signature's order "
                f"({', '.join(self.names)}); got {x.shape[1]}"
            )
        all_bool = all(p[3] for p in self._plan)
        if x.dtype.kind not in "fiu" and not (x.dtype.kind == "b" and all_bool):
            raise EdgeInputError(f"feature '(2-D array)' must be numeric, got dtype {x.dtype}")
        x = np.asarray(x, dtype=np.float64)
        if self._any_bad(x):
            reasons = self._row_reasons(x)
            first = next(i for i, r in enumerate(reasons) if r is not None)
            text = str(reasons[first])
            same = sum(1 for r in reasons if r == text)
            if len(x) > 1 and text.endswith(" is null or NaN"):  # the core's NullFeatureError
                rows = [i for i, r in enumerate(reasons) if r == text][:100]
                shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
                raise EdgeInputError(
                    f"{text} in {len(rows)} row(s) (row {shown}); the signature does not allow missing "
                    "values for it"
                )
            if len(x) > 1:  # one row needs no row number
                text += f" in row {first}" if same == 1 else f" in {same} rows (row {first}, ...)"
            raise EdgeInputError(text)
        return np.ascontiguousarray(x, dtype=dtype)

    def _any_bad(self, x: np.ndarray) -> bool:
        """Whether any row breaks a rule (vectorized; the exact reasons are found only then)."""
        with np.errstate(invalid="ignore", over="ignore"):
            for j, (_, nullable, ints, is_bool) in enumerate(self._plan):
                col = x[:, j]
                nan = np.isnan(col)
                if (not nullable and nan.any()) or not (np.abs(col[~nan]) < self.limit).all():
                    return True
                if (
                    ints is not None
                    and ((col != np.rint(col)) | (col < ints[0]) | (col > ints[1]))[~nan].any()
                ):
                    return True
                if is_bool and ((col != 0.0) & (col != 1.0))[~nan].any():
                    return True
        return False

    def _row_reasons(self, x: np.ndarray) -> list[str | None]:
        """Each row's first broken rule's reason (the slow, exact path, taken only for an error)."""
        out: list[str | None] = []
        buf = np.empty((1, len(self.names)))
        for r in x:
            try:
                self.one_into(dict(zip(self.names, r.tolist(), strict=True)), buf)
                out.append(None)
            except EdgeInputError as err:
                out.append(str(err))
        return out


def _compile_fast(
    plan: Sequence[tuple[str, bool, tuple[float, float] | None, bool]], dtype: np.dtype[Any], strict: bool
) -> Any:
    """The clean row's path, generated once per signature: read every feature, test each value with the
    one comparison its rule needs, and write the row with one ``struct.pack_into`` into the runner's
    buffer. Anything it does not accept outright (a missing feature, a value of another type, any rule
    broken) returns False and takes the exact path, which gives the error - so the two cannot disagree
    on an answer, only on speed (``tests/edge/test_checks.py`` holds both to the core)."""
    n = len(plan)
    code = "f" if dtype == np.float32 else "d"
    # float32: |x| must stay below the value float32 rounds to infinity; float64: finite (an int too
    # large for a double fails `<= DBL_MAX` and takes the exact path, which calls it infinite)
    bound = "-L < {v} < L" if code == "f" else "-M <= {v} <= M"
    tests = []
    for j, (_, nullable, ints, is_bool) in enumerate(plan):
        v = f"v{j}"
        if is_bool:
            tests.append(f"({v} is True or {v} is False or ((type({v}) is float or type({v}) is int) and "
                         f"({v} == 0 or {v} == 1)))")  # fmt: skip
        elif ints is not None:
            lo, hi = ints
            tests.append(f"((type({v}) is int and {lo!r} <= {v} <= {hi!r}) or (type({v}) is float and "
                         f"{lo!r} <= {v} <= {hi!r} and {v}.is_integer()))")  # fmt: skip
        else:
            finite = bound.format(v=v)
            nan = f"{v} != {v} or " if nullable else ""
            tests.append(f"((type({v}) is float and ({nan}{finite})) or (type({v}) is int and {finite}))")
    names = [p[0] for p in plan]
    lines = ["def fast(row, out):"]
    if strict:
        lines.append(f"    if len(row) != {n}:\n        return False")
    lines.append("    try:")
    lines += [f"        v{j} = row[{name!r}]" for j, name in enumerate(names)]
    lines += ["    except KeyError:", "        return False"]
    lines.append("    if " + " and ".join(tests) + ":")
    lines.append(f"        pack(out, 0, {', '.join(f'v{j}' for j in range(n))})")
    lines.append("        return True")
    lines.append("    return False")
    import struct

    env: dict[str, Any] = {
        "pack": struct.Struct(f"={n}{code}").pack_into,
        "L": F32_OVERFLOW,
        "M": sys.float_info.max,
    }
    exec("\n".join(lines), env)
    return env["fast"]
