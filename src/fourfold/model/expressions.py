"""The row check's rules as two other languages say them: Spark SQL conditions (the Spark engine's
``_reason`` column) and JSON Schema bounds (the server's OpenAPI document) - generated from one
:class:`~fourfold.model.check.RowCheck`, never written again by hand.

    >>> # conditions = sql_conditions(predictor.rules, required=["user_id"])   # [(sql, reason), ...]
    >>> # json_schema(predictor.rules, feature)                              # {"type": "number", ...}
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from fourfold.model.check import RowCheck, bounds
from fourfold.model.signature import Feature

__all__ = ["json_schema", "sql_conditions"]

_INF = math.inf


def sql_conditions(
    check: RowCheck, required: Sequence[str] = (), floating: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """``(condition, reason)`` pairs in rule order, as Spark SQL over the batch's columns: the first
    true condition is the row's reason. ``floating``: the required columns of a floating type (NaN
    counts as missing there too)."""
    out: list[tuple[str, str]] = []
    for c in required:
        q = _quote(c)
        out.append((f"{q} IS NULL" + (f" OR isnan({q})" if c in floating else ""), f"missing {c!r}"))
    dtypes = {f.name: f.dtype for f in check.signature.inputs}
    for rule in check.rules():
        if rule.kind in ("missing", "type"):
            continue  # a column either exists with a numeric type or the job is refused before it runs
        d = f"CAST({_quote(rule.column)} AS DOUBLE)"
        number = f"NOT isnan({d})"  # Spark orders NaN above every number: comparisons are guarded
        finite = f"{number} AND abs({d}) < {_double(_INF)}"
        if rule.kind == "null":
            cond = f"{d} IS NULL OR isnan({d})"
        elif rule.kind == "infinite":
            cond = f"{number} AND abs({d}) = {_double(_INF)}"
        elif rule.kind == "range":
            cond = f"{number} AND abs({d}) >= {_double(check.limit)}"
        elif rule.kind == "integer":
            lo, hi = bounds(dtypes[rule.column]) or (0.0, 0.0)
            cond = f"{finite} AND ({d} != rint({d}) OR {d} < {_double(lo)} OR {d} > {_double(hi)})"
        else:
            cond = f"{finite} AND {d} != 0.0D AND {d} != 1.0D"
        out.append((cond, rule.reason))
    return out


def json_schema(check: RowCheck, f: Feature) -> dict[str, Any]:
    """The JSON Schema of a value of feature ``f`` that ``check`` accepts (OpenAPI's bounds).

    The rules judge the double a JSON number parses to, so a bound is stated as the real number where
    that rounding crosses it (exact, in Python ints): e.g. a float32 model refuses doubles from
    ``2**128 - 2**103`` on, which is every JSON number from ``2**128 - 2**103 - 2**74`` on."""
    schema: dict[str, Any]
    ints = bounds(f.dtype)
    if ints is not None:
        lo, hi = ints
        schema = {"type": "integer", **_json_bound(lo, "minimum"), **_json_bound(hi, "maximum")}
    elif f.dtype == "bool":
        schema = {"anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 1}]}
    elif check.limit < _INF:  # float32: |x| < limit, exclusive
        schema = {"type": "number", **_json_bound(-check.limit, "exclusiveMinimum"),
                  **_json_bound(check.limit, "exclusiveMaximum")}  # fmt: skip
    else:  # float64: every finite double
        big = sys.float_info.max
        schema = {"type": "number", **_json_bound(-big, "minimum"), **_json_bound(big, "maximum")}
    return {"anyOf": [schema, {"type": "null"}]} if f.nullable else schema


def _json_bound(b: float, key: str) -> dict[str, int | float]:
    """A JSON Schema bound for "the double a number parses to is within ``b``" (``key`` says which side
    and whether ``b`` itself is in): the real halfway to the next double, with round-half-to-even
    deciding whether that halfway point is in. Below 2**53 a bound is exact as it is."""
    if abs(b) < 2.0**53:
        return {key: int(b) if b == int(b) else b}
    upper = key in ("maximum", "exclusiveMaximum")
    inclusive = key in ("maximum", "minimum")
    x = b if upper else -b  # work on the upper side; the lower one is its mirror
    exact = int(x)
    mantissa, exp = math.frexp(x)
    ulp = 2 ** (exp - 53)
    even = int(mantissa * 2**53) % 2 == 0
    if inclusive:  # in: d <= x. Reals up to x + ulp/2 round to x or below; the midpoint to x when even
        threshold, closed = exact + ulp // 2, even
    else:  # in: d < x. Reals from x - ulp/2 on round to x or above; the midpoint to x when even
        threshold, closed = exact - ulp // 2, not even
    name = (
        ("maximum" if closed else "exclusiveMaximum")
        if upper
        else ("minimum" if closed else "exclusiveMinimum")
    )
    return {name: threshold if upper else -threshold}


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _double(x: float) -> str:
    """A Spark SQL double literal for exactly ``x``."""
    if math.isinf(x):
        return f"CAST('{'-' if x < 0 else ''}Infinity' AS DOUBLE)"
    return f"{float(x)!r}D"
