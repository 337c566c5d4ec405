"""``fourfold stream``: score events from a log (Kafka, Redis Streams, a JSONL file) into decisions."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("stream")
    def stream(
        uri: Annotated[str, typer.Argument(help="Model URI, e.g. models:/fraud/production.")],
        source: Annotated[
            str,
            typer.Option(
                "--source",
                help="kafka://host:port/topic, redis-stream://host:port/db/name?shards=N, or a .jsonl "
                "file (- for stdin).",
            ),
        ],
        sink: Annotated[
            str,
            typer.Option("--sink", help="Where decisions go: kafka://, redis-stream:// or a .jsonl file."),
        ],
        dlq: Annotated[
            str | None, typer.Option("--dlq", help="Where dead letters go (same kinds as --sink).")
        ] = None,
        group: Annotated[
            str, typer.Option(help="Consumer group: the processes sharing the work.")
        ] = "fourfold",
        store: Annotated[
            str | None,
            typer.Option(
                help="Online store for state and checkpoints (default: FOURFOLD_STORE, else SQLite)."
            ),
        ] = None,
        features: Annotated[
            str | None, typer.Option(help="features.yaml to use instead of the model package's.")
        ] = None,
        exactly_once: Annotated[
            bool, typer.Option("--exactly-once", help="Kafka transactions: each decision exactly once.")
        ] = False,
        threshold: Annotated[
            float | None,
            typer.Option(help="Block above this score (default: the package's decision threshold)."),
        ] = None,
        id_field: Annotated[str, typer.Option(help="The event field that identifies an event.")] = "event_id",
        no_features: Annotated[
            bool, typer.Option("--no-features", help="Leave the feature values out of the decisions.")
        ] = False,
        batch_size: Annotated[
            int | None,
            typer.Option(
                help="Most events per poll batch (default 2000; 5000 with --exactly-once, where "
                "each batch is a transaction).",
                show_default=False,
            ),
        ] = None,
        max_wait_ms: Annotated[int, typer.Option(help="Longest wait for a batch to fill.")] = 20,
        commit_interval_ms: Annotated[
            int | None,
            typer.Option(
                help="At-least-once: checkpoint (state, offsets) this often; records go out at once. "
                "Default: every 250 ms, spaced out up to 500 ms while checkpoints are slow. "
                "--exactly-once checkpoints every batch.",
                show_default=False,
            ),
        ] = None,
        follow: Annotated[
            bool, typer.Option("--follow", help="Keep reading a JSONL file as it grows (tail -f).")
        ] = False,
        instance: Annotated[
            str | None,
            typer.Option(help="This process's stable name in the group (its Kafka transactional id)."),
        ] = None,
        metrics_port: Annotated[
            int | None, typer.Option(help="Serve /healthz and /metrics on --metrics-host:PORT.")
        ] = None,
        metrics_host: Annotated[
            str, typer.Option(help="The address /healthz and /metrics listen on (0.0.0.0 in a pod).")
        ] = "127.0.0.1",
        runtime: Annotated[
            str, typer.Option(help="auto (the runtime the package was compiled for), native, onnx or c.")
        ] = "auto",
        engine: Annotated[
            str,
            typer.Option(
                help="local (this process) or flink (a PyFlink job on Flink's local mini-cluster; needs "
                "the Flink environment: ./dev test-flink makes .venv-flink). With flink a file --sink / "
                "--dlq is a directory of JSONL part files and --commit-interval-ms is Flink's "
                "checkpoint interval (default 1000)."
            ),
        ] = "local",
        flink_jars: Annotated[
            str | None,
            typer.Option(
                help="Comma-separated jar paths or URLs for the Flink job (pipeline.jars): "
                "flink-connector-kafka and kafka-clients, needed with Kafka."
            ),
        ] = None,
        parallelism: Annotated[
            int | None,
            typer.Option(
                help="Flink's parallelism (default: min(8, the machine's cores)).", show_default=False
            ),
        ] = None,
        state_backend: Annotated[
            str, typer.Option(help="Flink's keyed state backend: hashmap (the heap) or rocksdb.")
        ] = "hashmap",
        flink_conf: Annotated[
            list[str] | None,
            typer.Option(help="KEY=VALUE: a Flink option over fourfold's settings (repeatable)."),
        ] = None,
        workers: Annotated[
            int,
            typer.Option(help="Group members to start here, one process each; needs Kafka or Redis Streams."),
        ] = 1,
    ) -> None:
        """Score a stream: windowed features per entity, the model, block/allow decisions to --sink."""
        from fourfold.errors import InvalidOptionError
        from fourfold.stream import StreamOptions, run_stream

        pairs: list[tuple[str, str]] = []
        for item in flink_conf or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidOptionError(f"--flink-conf takes KEY=VALUE, got {item!r:.80}")
            pairs.append((key.strip(), value.strip()))
        jars = tuple(j.strip() for j in (flink_jars or "").split(",") if j.strip())
        options = StreamOptions(
            uri, source, sink, dlq, group=group, store=store, features=features, exactly_once=exactly_once,
            threshold=threshold, id_field=id_field, with_features=not no_features, batch_size=batch_size,
            max_wait_ms=max_wait_ms, commit_interval_ms=commit_interval_ms, follow=follow, instance=instance,
            metrics_port=metrics_port, metrics_host=metrics_host, workers=workers,
            runtime=runtime, engine=engine, flink_jars=jars, parallelism=parallelism,
            state_backend=state_backend, flink_conf=tuple(pairs),
        )  # fmt: skip
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        stop = threading.Event()

        def _stop(signum: int, frame: Any) -> None:
            stop.set()  # the batch in flight finishes, is checkpointed and delivered, then we exit

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

        if options.workers > 1:
            from fourfold.stream.workers import run_workers

            typer.echo(f"streaming {uri}: {source} -> {sink} with {options.workers} workers", err=True)
            raise typer.Exit(run_workers(options, stop))

        def ready(processor: Any, health: Any) -> None:
            where = f", /healthz on {options.metrics_host}:{health.port}" if health is not None else ""
            typer.echo(f"streaming {uri}: {source} -> {sink}{where}", err=True)

        summary = run_stream(options, stop=stop, on_ready=ready)
        dead = ", ".join(f"{k} {v}" for k, v in sorted(summary.dead_letters.items())) or "none"
        if summary.decided < 0:  # Flink into Kafka: the job does not count
            typer.echo(f"the Flink job ended; decisions in {sink}", err=True)
        else:
            typer.echo(f"decided {summary.decided} events; dead letters: {dead}", err=True)
