"""The Flink runner of the streaming pattern (``fourfold stream --engine flink``): the stream processor's
per-key path as a PyFlink ``KeyedProcessFunction``, keyed state in Flink's state backend, checkpoints by
Flink. PyFlink is imported only inside :mod:`~fourfold.stream.flink.functions` and the job builder, so
this package imports without it.

    keyed.py      KeyedScoring: one event of one key on the one path (no PyFlink)
    functions.py  the PyFlink key selector and KeyedProcessFunction around it
    config.py     the Flink configuration, set on purpose (bundle size, execution mode, checkpoints)
    job.py        run_flink: source -> key_by -> ScoreEvents -> sinks (+ the dead-letter side output)
"""

from __future__ import annotations

__all__: list[str] = []
