"""One feature assembly: a model's input columns, built from what the caller sends and what fourfold
computes, by one precedence rule that every pattern follows.

Each of a model's features has exactly one source, fixed by its feature set:

* a **request feature** comes from the caller's field (``field``, by default the feature's name);
* a **windowed feature** is computed by fourfold - from the entity's stored state (online, streaming) or
  point-in-time from the event log (batch with ``--events``);
* an **entity feature** is read by fourfold from the online store (online, streaming).

**The rule: a feature fourfold computes is never taken from the caller.** A request, event or input
table that carries a field of that name is refused (:class:`~fourfold.errors.ComputedFieldError`, 422,
naming it) - otherwise a caller could steer a score by sending its own ``txn_count_10m``. Where nothing
is computed (batch without ``--events``: the table holds the features, computed upstream), every feature
is a column of the input. A model without a feature set takes every feature from the caller.

    >>> from fourfold.demo.features import FEATURES, FRAUD_FEATURES
    >>> a = Assembly(FEATURES, FRAUD_FEATURES, windowed="computed", entity="computed")
    >>> a.fields
    ('user_id', 'amount', 'merchant_category', 'device')
    >>> a.check_fields({"user_id": "u1", "amount": 9.5, "merchant_category": 3, "device": 1,
    ...                 "txn_count_10m": 0})
    Traceback (most recent call last):
    ...
    fourfold.errors.ComputedFieldError: the request must not carry 'txn_count_10m': fourfold computes it ...
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal

import numpy as np

from fourfold.errors import ComputedFieldError, InputError, MissingFieldError, UnknownFieldError
from fourfold.features.definitions import EntityFeature, FeatureSet, WindowedFeature

__all__ = ["Assembly"]

Source = Literal["computed", "given"]


class Assembly:
    """Where each of a model's features (``names``, in its signature's order) comes from.

    ``windowed`` / ``entity``: whether fourfold computes the feature set's windowed / entity features in
    this pattern (``"computed"``) or the caller gives them (``"given"``: batch input columns)."""

    def __init__(
        self,
        names: Sequence[str],
        feature_set: FeatureSet | None,
        *,
        windowed: Source = "computed",
        entity: Source = "computed",
    ) -> None:
        self.names = tuple(names)
        self.feature_set = feature_set
        defined = {f.name: f for f in feature_set.features} if feature_set is not None else {}
        request: list[tuple[str, str]] = []
        computed: dict[str, str] = {}
        for name in self.names:
            f = defined.get(name)
            if isinstance(f, WindowedFeature) and windowed == "computed":
                computed[name] = "the entity's event history (a windowed feature)"
            elif isinstance(f, EntityFeature) and entity == "computed":
                computed[name] = "the online store (an entity feature)"
            else:
                request.append((name, getattr(f, "field", name) if f is not None else name))
        #: (feature name, the caller's field) of each feature the caller sends, in the model's order
        self.request = tuple(request)
        #: feature name -> where fourfold computes it from
        self.computed = computed
        self.key: str | None = None
        if computed and feature_set is not None:
            from fourfold.features.events import single_source

            self.key = single_source(feature_set)[0]
        keys = {e.join_key for e in feature_set.entities} if feature_set is not None else set()
        #: what the caller sends: the entity key (when fourfold computes features for it), then the fields
        self.fields = ((self.key,) if self.key else ()) + tuple(dict.fromkeys(f for _, f in request))
        self._known = frozenset(self.fields) | keys
        self._refused = frozenset(computed) - {f for _, f in request}
        #: ``check_fields(given, unknown=False)`` would pass (the stream asks it of every event)
        self.accepts = self._accepts()

    def _accepts(self) -> Callable[[Collection[str]], bool]:
        """One expression of ``in`` tests, compiled once (the names are repr()-quoted literals)."""
        present = " and ".join(f"{f!r} in given" for f in self.fields) or "True"
        refused = " or ".join(f"{f!r} in given" for f in sorted(self._refused)) or "False"
        test: Callable[[Collection[str]], bool] = eval(f"lambda given: ({present}) and not ({refused})", {})
        return test

    def __getstate__(self) -> dict[str, Any]:  # worker processes get a copy: compiled again there
        state = dict(self.__dict__)
        del state["accepts"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.accepts = self._accepts()

    @property
    def computes(self) -> bool:
        """Whether fourfold computes any of the model's features (and so needs the entity key)."""
        return bool(self.computed)

    def check_fields(
        self, given: Collection[str], *, where: str = "the request", unknown: bool = True
    ) -> None:
        """Refuse a caller's fields: one fourfold computes (:class:`ComputedFieldError`), a missing one
        (:class:`MissingFieldError`, listing only what the caller sends) and, with ``unknown``, one that
        is neither (:class:`UnknownFieldError`). Cheap: set operations on the names."""
        names = given if isinstance(given, AbstractSet) else frozenset(given)  # dict keys: no copy
        computed = self._refused & names
        if computed:
            ordered = [n for n in self.computed if n in computed]
            raise ComputedFieldError(ordered, self.computed[ordered[0]], where=where)
        for field in self.fields:
            if field not in names:
                raise MissingFieldError(field, list(self.fields), where=where)
        if unknown and len(names) > len(self.fields):
            extra = sorted(str(n) for n in names if n not in self._known)
            if extra:
                raise UnknownFieldError(extra, list(self.fields), where=where)

    def key_of(self, row: Mapping[str, Any], *, where: str = "the request") -> str:
        """The entity id of a request: a non-empty string (a number is not silently made one)."""
        assert self.key is not None
        key = row.get(self.key)
        if not isinstance(key, str) or not key:
            shown = "missing" if key is None else f"{type(key).__name__} {key!r:.40}"
            raise InputError(
                f"{where}: field {self.key!r} (the entity id) must be a non-empty string, got {shown}"
            )
        return key

    def row(self, request: Mapping[str, Any], computed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One row of model inputs (by feature name): the caller's fields, then what fourfold computed."""
        out = {name: request[field] for name, field in self.request}
        if computed:
            for name in self.computed:
                out[name] = computed[name]
        return out

    def columns(
        self, batch: Mapping[str, Any] | Any, computed: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, Any]:
        """Model input columns (by feature name) of a columnar batch (an Arrow record batch or table, or a
        mapping of columns): the caller's columns, then what fourfold computed."""
        arrow = hasattr(batch, "column") and not isinstance(batch, Mapping)
        get = getattr(batch, "column") if arrow else batch.__getitem__  # noqa: B009 - Mapping | Arrow
        out: dict[str, Any] = {name: get(field) for name, field in self.request}
        if computed:
            for name in self.computed:
                out[name] = computed[name]
        return out
