"""The PyFlink functions of the Flink runner: the key selector and the ``KeyedProcessFunction`` - thin
wrappers of :class:`~fourfold.stream.flink.keyed.KeyedScoring` (PyFlink imported here, so this module is
imported only inside the Flink environment; the job imports it once ``pyflink`` is known to be there).

The key's state is one ``ValueState`` of bytes (the incremental engine's key blob), kept in Flink's
state backend and checkpointed by Flink; dead letters leave through the side output :data:`DEAD`.
"""

from __future__ import annotations

from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, KeySelector, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from fourfold.stream.flink.keyed import JobSpec, KeyedScoring, key_of

__all__ = ["DEAD", "EventKey", "ScoreEvents"]

#: the side output of dead letters (JSON text)
DEAD = OutputTag("dead-letters", Types.STRING())


class EventKey(KeySelector):
    """An event's entity key (``keyed.NO_KEY`` for one the keyed function will refuse)."""

    def __init__(self, key_column: str | None) -> None:
        self.key_column = key_column

    def get_key(self, value: str) -> str:
        return key_of(value, self.key_column)


class ScoreEvents(KeyedProcessFunction):
    """Per event of a key: the stream's one path (:class:`KeyedScoring`), the key's state in Flink."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.scoring: KeyedScoring | None = None
        self.state: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.scoring = KeyedScoring(self.spec)
        self.scoring.open()
        descriptor = ValueStateDescriptor("fourfold-key-state", Types.PRIMITIVE_ARRAY(Types.BYTE()))
        self.state = runtime_context.get_state(descriptor)

    def close(self) -> None:
        if self.scoring is not None:
            self.scoring.close()

    def process_element(self, value: str, ctx: Any) -> Any:
        assert self.scoring is not None
        engine = self.scoring.engine
        state = self.state
        out = self.scoring.process(value, state.value() if engine is not None else None)
        if out.state is not None:
            state.update(out.state)
        if out.decision is not None:
            yield out.decision
        if out.dead is not None:
            yield DEAD, out.dead
