"""What a batch job reads from each input row, and how a record batch becomes the model's columns.

    >>> # inputs = BatchInputs.for_model(signature, feature_set, id_cols=("user_id",), events=False)
    >>> # inputs.check_schema(source.schema)        # before anything is staged or read
    >>> # view = inputs.view(record_batch)          # the model's columns (+ ids, key, as-of time)

One precedence rule (:class:`fourfold.features.assemble.Assembly`): with ``--events`` the feature set's
windowed features are computed (``windowed="computed"``) and an input column named like one is refused -
fourfold never takes a feature it computes from the caller; without ``--events`` every feature is an input
column (``windowed="given"``, computed upstream). A request feature whose ``field`` differs from its
name is read from that field's column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from fourfold.batch.windowed import Windowed
from fourfold.errors import ComputedFieldError, FeatureTypeError, InputError, MissingFieldError
from fourfold.features.assemble import Assembly
from fourfold.features.definitions import FeatureSet
from fourfold.model.columns import column_type_error
from fourfold.model.signature import Signature

__all__ = ["BatchInputs"]

_WHERE = "the batch input"


@dataclass(frozen=True)
class BatchInputs:
    """The columns a job reads: ids, the model's request fields, and - when windowed features are
    computed - the entity key and the as-of ``timestamp`` column (None with ``--as-of``)."""

    signature: Signature
    assembly: Assembly
    id_cols: tuple[str, ...] = ()
    timestamp: str | None = None
    windowed: Windowed | None = None  # attached once the log is indexed

    @classmethod
    def for_model(
        cls, signature: Signature, feature_set: FeatureSet | None, id_cols: tuple[str, ...], *,
        events: bool, timestamp: str | None = None, as_of: bool = False,
    ) -> BatchInputs:  # fmt: skip
        assembly = Assembly(
            signature.feature_names, feature_set, windowed="computed" if events else "given", entity="given"
        )
        ts = None
        if assembly.computes and not as_of:
            from fourfold.features.events import single_source

            assert feature_set is not None
            ts = timestamp or single_source(feature_set)[1]
        return cls(signature, assembly, tuple(id_cols), ts)

    @property
    def required(self) -> tuple[str, ...]:
        """Columns a row must have (non-null) to be scored: the ids, then the entity key and as-of time."""
        key = (self.assembly.key,) if self.assembly.key else ()
        return tuple(dict.fromkeys([*self.id_cols, *key, *((self.timestamp,) if self.timestamp else ())]))

    @property
    def columns(self) -> tuple[str, ...]:
        """Every input column the job reads, in order."""
        return tuple(dict.fromkeys([*self.required, *self.assembly.fields]))

    # -- before anything runs --------------------------------------------------------------------------------
    def check_schema(self, schema: pa.Schema) -> None:
        """Refuse an input whose columns cannot give the model its features: a column fourfold computes
        (:class:`ComputedFieldError`), missing columns (named, with what the input needs), a column whose
        type cannot hold its feature (:class:`FeatureTypeError`)."""
        names = set(schema.names)
        try:
            self.assembly.check_fields(names, where=_WHERE, unknown=False)
        except ComputedFieldError as exc:
            exc.message = (
                f"{exc.message}; drop the column, or run without --events to score the input's own values"
            )
            exc.args = (exc.message,)
            raise
        except MissingFieldError:
            pass  # all of them are named below
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise InputError(self._missing_message(missing, schema))
        dtypes = {f.name: f.dtype for f in self.signature.inputs}
        for name, field in self.assembly.request:
            problem = column_type_error(dtypes[name], schema.field(field).type)
            if problem is not None:
                expected, got = problem.split(", got ", 1)
                column = f"input column {field!r}" + (f" (feature {name!r})" if field != name else "")
                raise FeatureTypeError.because(name, f"{column} must be {expected}, got {got}")
        if self.timestamp is not None:
            t = schema.field(self.timestamp).type
            if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
                raise InputError(
                    f"input column {self.timestamp!r} (the rows' as-of time) must be a timestamp or integer "
                    f"epoch milliseconds, got {t}; pass --timestamp COLUMN or --as-of TIME"
                )

    def _missing_message(self, missing: list[str], schema: pa.Schema) -> str:
        fs = self.assembly.feature_set
        windowed = {f.name for f in fs.windowed} if fs is not None else set()
        lacks = f"{_WHERE} lacks column(s) {', '.join(map(repr, missing))}"
        if not self.assembly.computes and windowed and all(c in windowed for c in missing):
            return (
                f"{lacks}: windowed features of the model's feature set; pass --events LOG to compute them "
                "point-in-time from the event log, or add the columns to the input"
            )
        why = []
        if self.timestamp is not None and self.timestamp in missing:
            why.append(f"{self.timestamp!r} is the rows' as-of time: pass --timestamp COLUMN or --as-of TIME")
        if self.assembly.key is not None and self.assembly.key in missing:
            why.append(f"{self.assembly.key!r} is the entity key the windowed features are computed for")
        return (
            f"{lacks}; it needs: {', '.join(self.columns)}"
            + "".join(f"; {w}" for w in why)
            + f" (it has: {', '.join(schema.names)})"
        )

    # -- per record batch ------------------------------------------------------------------------------------
    @property
    def plain(self) -> bool:
        """Whether a record batch is its own view (no renamed field, nothing computed)."""
        return self.windowed is None and all(name == field for name, field in self.assembly.request)

    def view(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The columns :meth:`fourfold.Predictor.check` reads: the required ones, then each feature by
        its name (a renamed field, a computed windowed feature). Zero-copy for the input's columns."""
        if self.plain:
            return batch
        computed = self.windowed.values(batch) if self.windowed is not None else None
        arrays: dict[str, Any] = {c: batch.column(c) for c in self.required}
        for name, col in self.assembly.columns(batch, computed).items():
            arrays.setdefault(name, col if isinstance(col, pa.Array) else pa.array(col))
        return pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays))
