"""run_flink: ``fourfold stream --engine flink`` - the stream processor's per-key path as a PyFlink job.

The graph: a source (a JSONL file through Flink's ``FileSource``, or Kafka's ``KafkaSource``) ->
``key_by`` the event's entity key -> :class:`~fourfold.stream.flink.functions.ScoreEvents` (a
``KeyedProcessFunction``: the incremental engine, ``Predictor.check_one`` / ``score``, the decision
record; the key's state in Flink's state backend) -> decisions to a sink (a directory of JSONL part files
through ``FileSink``, or ``KafkaSink``), dead letters from its side output to ``--dlq``. Flink's
checkpoints hold the keys' state and the source positions; the file sink commits its part files and the
Kafka sink (``--exactly-once``) its transaction with each checkpoint.

It runs on Flink's local mini-cluster in this process (``env.execute``), in the Flink environment
(``./dev test-flink`` makes it: PyFlink pins conflict with pyspark and current numpy / pyarrow).

    >>> # run_flink(StreamOptions("models:/fraud/production", source="events.jsonl",
    >>> #                         sink="decisions.jsonl", dlq="dead.jsonl", engine="flink"))
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fourfold.errors import MissingExtraError
from fourfold.features.assemble import Assembly
from fourfold.features.definitions import load_features_file
from fourfold.registry.resolve import resolve
from fourfold.stream.flink.config import flink_configuration
from fourfold.stream.flink.keyed import JobSpec
from fourfold.stream.job import StreamSummary
from fourfold.stream.logs.base import parse_kind
from fourfold.stream.options import StreamOptions

__all__ = ["FLINK_ENVIRONMENT", "require_pyflink", "run_flink"]

log = logging.getLogger("fourfold.stream")

#: how to get an environment with PyFlink (its pins conflict with pyspark's and current numpy / pyarrow)
FLINK_ENVIRONMENT = (
    "the Flink runner needs PyFlink (apache-flink 2.3), which lives in its own environment: "
    "`./dev test-flink` creates .venv-flink (or: python -m venv .venv-flink && .venv-flink/bin/pip install "
    "-c constraints-flink.txt 'fourfold[flink]'); run .venv-flink/bin/fourfold stream --engine flink ..."
)


class FlinkMissingError(MissingExtraError):
    """PyFlink is not installed here: the message says how to get the Flink environment."""

    def __init__(self) -> None:
        super().__init__("pyflink", "flink", "fourfold stream --engine flink")
        self.message = FLINK_ENVIRONMENT
        self.args = (FLINK_ENVIRONMENT,)


def require_pyflink() -> None:
    """Raise :class:`FlinkMissingError` unless PyFlink can be imported."""
    try:
        import pyflink.datastream  # noqa: F401
    except ImportError:
        raise FlinkMissingError() from None


def _source_name(url: str) -> str:
    if parse_kind(url) == "kafka":
        from fourfold.stream.logs.kafka import parse_kafka_url

        return f"kafka-{parse_kafka_url(url)[1]}"
    from fourfold.stream.logs.jsonl import path_of

    path = path_of(url)
    assert path is not None
    return f"file-{path.resolve().as_posix().strip('/').replace('/', '_').replace(':', '_')}"


def _spec(o: StreamOptions) -> JobSpec:
    pkg = resolve(o.model)
    if o.features is None:
        fs = pkg.features()
    else:
        fs = load_features_file(o.features, needs=pkg.signature.feature_names, model=pkg.label,
                                label=f"--features {o.features}")  # fmt: skip
    key = Assembly(pkg.signature.feature_names, fs).key
    version = str(pkg.version or pkg.manifest.get("created_at", "unversioned"))
    url = o.source.split("?")[0] if parse_kind(o.source) == "kafka" else o.source
    return JobSpec(
        package=str(pkg.path), version=version, key_column=key, source=url,
        source_name=_source_name(o.source),
        runtime=o.runtime, features=None if o.features is None else str(Path(o.features).resolve()),
        threshold=o.threshold, id_field=o.id_field, with_features=o.with_features, store=o.store,
        max_keys=o.max_keys,
    )  # fmt: skip


def _kafka_parts(url: str) -> tuple[str, str, dict[str, str]]:
    from fourfold.stream.logs.kafka import parse_kafka_url

    return parse_kafka_url(url)


def _source(env: Any, o: StreamOptions) -> Any:
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema

    if parse_kind(o.source) == "kafka":
        from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
        from pyflink.java_gateway import get_gateway

        # the group's committed offsets, else the earliest - built in Java: PyFlink's own
        # KafkaOffsetResetStrategy names the class as the shaded SQL connector jar has it, which the plain
        # connector + kafka-clients jars do not
        jvm = get_gateway().jvm
        earliest = jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST
        initializer = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
        starting = KafkaOffsetsInitializer(initializer.committedOffsets(earliest))
        servers, topic, props = _kafka_parts(o.source)
        source = (
            KafkaSource.builder()
            .set_bootstrap_servers(servers)
            .set_topics(topic)
            .set_group_id(o.group)
            .set_starting_offsets(starting)
            .set_value_only_deserializer(SimpleStringSchema())
            .set_properties({"commit.offsets.on.checkpoint": "true", **props})
            .build()
        )
        return env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka events")
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    path = str(Path(o.source.removeprefix("file://")).resolve())
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), path)
    if o.follow:
        builder = builder.monitor_continuously(Duration.of_millis(500))
    # one file is one split, read in order by one reader: the local processor's log order
    events = env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "jsonl events")
    return events.set_parallelism(1)


def _sink(stream: Any, url: str, o: StreamOptions, what: str) -> None:
    from pyflink.common.serialization import SimpleStringSchema

    if parse_kind(url) == "kafka":
        from pyflink.datastream.connectors.base import DeliveryGuarantee
        from pyflink.datastream.connectors.kafka import (
            KafkaRecordSerializationSchema,
            KafkaSink,
        )

        servers, topic, props = _kafka_parts(url)
        serializer = (
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        builder = KafkaSink.builder().set_bootstrap_servers(servers).set_record_serializer(serializer)
        for k, v in props.items():
            builder = builder.set_property(k, v)
        if o.exactly_once:
            instance = o.instance or "flink"
            builder = (
                builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .set_transactional_id_prefix(f"fourfold-{o.group}-{instance}-{what}")
                .set_property("transaction.timeout.ms", "60000")
            )
        else:
            builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        stream.sink_to(builder.build()).name(f"{what} to {url.split('?')[0]}")
        return
    from pyflink.common.serialization import Encoder
    from pyflink.datastream.connectors.file_system import (
        BucketAssigner,
        FileSink,
        OutputFileConfig,
        RollingPolicy,
    )

    directory = Path(url.removeprefix("file://")).resolve()
    sink = (
        FileSink.for_row_format(str(directory), Encoder.simple_string_encoder())
        .with_output_file_config(
            OutputFileConfig.builder().with_part_prefix(what).with_part_suffix(".jsonl").build()
        )
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())  # the part files in the directory
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
        .build()
    )
    stream.sink_to(sink).name(f"{what} to {directory}")


def build(env: Any, o: StreamOptions, spec: JobSpec) -> None:
    """The job graph of ``o`` on ``env`` (see the module docstring)."""
    from pyflink.common import Types

    from fourfold.stream.flink.functions import DEAD, EventKey, ScoreEvents

    events = _source(env, o)
    decided = (
        events.key_by(EventKey(spec.key_column), key_type=Types.STRING())
        .process(ScoreEvents(spec), output_type=Types.STRING())
        .name("fourfold: features, model, decisions")
    )
    _sink(decided, o.sink, o, "decisions")
    if o.dlq is not None:
        _sink(decided.get_side_output(DEAD), o.dlq, o, "dead-letters")


def environment(o: StreamOptions) -> Any:
    """A ``StreamExecutionEnvironment`` configured by :func:`flink_configuration` (the local mini-cluster
    unless the configuration names another target)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    for k, v in flink_configuration(o, sys.executable).items():
        conf.set_string(k, v)
    return StreamExecutionEnvironment.get_execution_environment(conf)


def _count(url: str | None) -> int | None:
    """Lines in a file sink's committed part files (None for Kafka: the job does not count them)."""
    if url is None or parse_kind(url) != "jsonl":
        return None
    directory = Path(url.removeprefix("file://"))
    n = 0
    for part in directory.rglob("*.jsonl"):
        if not part.name.startswith("."):  # in-progress files are hidden until committed
            with part.open("rb") as f:
                n += sum(1 for _ in f)
    return n


def run_flink(
    options: StreamOptions, *, stop: threading.Event | None = None, on_ready: Any = None
) -> StreamSummary:
    """Run ``options``' stream on Flink until a bounded source (a file, not followed) is read to its end
    and the last checkpoint committed the sinks, or ``stop`` is set (the job is cancelled: what its last
    checkpoint committed stays). Counts come from file sinks (-1 for Kafka: Flink keeps them)."""
    require_pyflink()
    # A local job runs its Python workers as processes of `python.executable`, as a cluster does (PyFlink's
    # default for a local run is one "loopback" worker inside this process: one GIL for every subtask)
    os.environ.setdefault("_python_worker_execution_mode", "process")
    o = options
    spec = _spec(o)
    for url in (o.sink, o.dlq):
        if url is not None and parse_kind(url) == "jsonl":
            target = Path(url.removeprefix("file://"))
            if target.is_file():
                raise_file(target)
    env = environment(o)
    build(env, o, spec)
    started = time.monotonic()
    client = env.execute_async(f"fourfold stream {o.model}")
    if on_ready is not None:
        on_ready(client, None)
    stop = stop or threading.Event()
    status_future = client.get_job_execution_result()
    while not status_future.done():
        if stop.wait(0.2):
            client.cancel().result()
            break
    else:
        status_future.result()  # raises the job's failure
    log.info("flink job %s: %.1f s", client.get_job_id(), time.monotonic() - started)
    decided = _count(o.sink)
    dead = _count(o.dlq)
    return StreamSummary(-1 if decided is None else decided, {} if not dead else {"all": dead}, 0)


def raise_file(target: Path) -> None:
    from fourfold.errors import InvalidOptionError

    raise InvalidOptionError(
        f"{target} is a file: with --engine flink a file sink is a directory of JSONL part files "
        "(Flink's FileSink commits them at checkpoints); give a new or existing directory"
    )
