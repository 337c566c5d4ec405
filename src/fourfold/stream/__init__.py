"""The streaming pattern: events from a log (Kafka, Redis Streams, a JSONL file) -> windowed features
-> the model -> decisions to a log, state checkpointed in the online store with the input offsets.

    >>> # from fourfold.stream import StreamOptions, run_stream
    >>> # run_stream(StreamOptions("models:/fraud/production", source="kafka://127.0.0.1:9092/tx",
    >>> #                          sink="kafka://127.0.0.1:9092/decisions", group="fraud"))
"""

from __future__ import annotations

from fourfold.stream.job import StreamSummary, run_stream
from fourfold.stream.options import StreamOptions
from fourfold.stream.processor import StreamProcessor

__all__ = ["StreamOptions", "StreamProcessor", "StreamSummary", "run_stream"]
