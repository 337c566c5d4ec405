"""``fourfold deploy k8s``: Kubernetes manifests (a kustomize base) and a Dockerfile for a model's patterns.

$ fourfold deploy k8s models:/fraud/production --pattern online --out k8s/fraud-online
$ fourfold deploy k8s models:/fraud/production --all --input s3://b/in --output s3://b/out \\
      --source kafka://kafka:9092/payments --sink kafka://kafka:9092/decisions --store redis://redis:6379/0 \\
      --image registry.example.com/fraud-{pattern}:3 --out k8s/fraud
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class PatternChoice(StrEnum):
    online = "online"
    batch = "batch"
    stream = "stream"


def _default_name(model: str) -> str:
    """A model's name as a DNS label: lowercase, other characters as '-', a letter first."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    return re.sub(r"^[^a-z]+", "", name)[:45].rstrip("-")


def register(app: typer.Typer) -> None:
    deploy = typer.Typer(help="Deployment files for a model: Kubernetes manifests and Dockerfiles.",
                         no_args_is_help=True)  # fmt: skip
    app.add_typer(deploy, name="deploy")

    @deploy.command("k8s")
    def k8s(
        uri: Annotated[str, typer.Argument(help="Model URI: a package path or models:/NAME/VERSION|ALIAS.")],
        out: Annotated[
            Path, typer.Option("--out", help="Directory to write (new, empty, or written by this).")
        ],
        pattern: Annotated[PatternChoice | None, typer.Option(help="online, batch or stream.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="All three patterns, a base each.")] = False,
        name: Annotated[
            str | None, typer.Option(help="Base name of the resources (default: the model's).")
        ] = None,
        namespace: Annotated[str | None, typer.Option(help="Namespace (default: none written).")] = None,
        image: Annotated[
            str | None,
            typer.Option(
                help="Image reference (default fourfold-NAME-PATTERN:VERSION); with --all put "
                "{pattern} in it."
            ),
        ] = None,
        model_from: Annotated[
            str, typer.Option(help="image (baked in), volume (a PVC) or pull (init container).")
        ] = "image",
        model_claim: Annotated[str, typer.Option(help="--model-from volume: the PVC.")] = "fourfold-models",
        model_path: Annotated[
            str | None, typer.Option(help="--model-from volume: the package directory inside the PVC.")
        ] = None,
        store: Annotated[str | None, typer.Option(help="Online feature store URL (redis://...).")] = None,
        env: Annotated[
            list[str] | None, typer.Option("--env", help="NAME=VALUE for every container (repeatable).")
        ] = None,
        cpu_request: Annotated[str, typer.Option(help="CPU request per pod.")] = "1",
        cpu_limit: Annotated[
            str | None, typer.Option(help="CPU limit (default: the request; 'none': no limit).")
        ] = None,
        memory_request: Annotated[str, typer.Option(help="Memory request per pod.")] = "1Gi",
        memory_limit: Annotated[
            str | None, typer.Option(help="Memory limit (default: the request; 'none': no limit).")
        ] = None,
        port: Annotated[int, typer.Option(help="online: the server's port.")] = 8000,
        workers: Annotated[
            int | None, typer.Option(help="online: worker processes (default: whole cores).")
        ] = None,
        scale_on: Annotated[
            str | None, typer.Option(help="online: cpu, inflight or none; stream: lag or none.")
        ] = None,
        min_replicas: Annotated[int | None, typer.Option(help="online: 3; stream: 1.")] = None,
        max_replicas: Annotated[int | None, typer.Option(help="online: 50; stream: --partitions.")] = None,
        replicas: Annotated[int | None, typer.Option(help="With --scale-on none: a fixed count.")] = None,
        cpu_target: Annotated[int, typer.Option(help="online: the HPA's CPU utilization target, %.")] = 60,
        inflight_target: Annotated[
            int | None, typer.Option(help="online, --scale-on inflight: requests in flight per pod.")
        ] = None,
        prestop_seconds: Annotated[int, typer.Option(help="online: preStop sleep before SIGTERM.")] = 5,
        graceful_timeout: Annotated[
            float, typer.Option(help="online: the server's SIGTERM drain, s.")
        ] = 10.0,
        schedule: Annotated[str, typer.Option(help="batch: cron schedule.")] = "0 2 * * *",
        time_zone: Annotated[str, typer.Option(help="batch: the schedule's time zone.")] = "Etc/UTC",
        input: Annotated[str | None, typer.Option("--input", help="batch: what to score.")] = None,
        output: Annotated[str | None, typer.Option("--output", help="batch: where scores go.")] = None,
        partition: Annotated[str | None, typer.Option(help="batch: e.g. date={yesterday}.")] = None,
        backoff_limit: Annotated[int, typer.Option(help="batch: retries of a run that exits 1.")] = 2,
        source: Annotated[str | None, typer.Option(help="stream: kafka://host:port/topic.")] = None,
        sink: Annotated[str | None, typer.Option(help="stream: where decisions go.")] = None,
        dlq: Annotated[str | None, typer.Option(help="stream: where dead letters go.")] = None,
        group: Annotated[str, typer.Option(help="stream: the consumer group.")] = "fourfold",
        partitions: Annotated[int, typer.Option(help="stream: the source topic's partitions.")] = 8,
        lag_threshold: Annotated[int, typer.Option(help="stream: KEDA's lag per replica.")] = 10_000,
    ) -> None:
        """Write a kustomize base for the model's pattern(s): the resources as YAML, kustomization.yaml,
        and a Dockerfile. Apply with `kubectl apply -k OUT` after building and pushing the image."""
        from fourfold.deploy import PATTERNS, Batch, Common, Online, Resources, Stream, model_info, render
        from fourfold.deploy.options import Pattern
        from fourfold.deploy.output import write_tree
        from fourfold.errors import InvalidOptionError

        if all_ == (pattern is not None):
            raise InvalidOptionError("give one of --pattern online|batch|stream or --all")
        chosen: Pattern = "online" if pattern is None else pattern.value
        patterns: tuple[Pattern, ...] = PATTERNS if all_ else (chosen,)
        pairs: list[tuple[str, str]] = []
        for item in env or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise InvalidOptionError(f"--env must be NAME=VALUE, got {item!r:.80}")
            pairs.append((key, value))
        info = model_info(uri)
        base = name if name is not None else _default_name(info.name)
        none = {"none", ""}
        common = Common(
            name=base, image=image, namespace=namespace, model_from=model_from, model_claim=model_claim,  # type: ignore[arg-type]
            model_path=model_path, store=store, env=tuple(pairs),
            resources=Resources(
                cpu_request=cpu_request, memory_request=memory_request,
                cpu_limit=cpu_request if cpu_limit is None else None if cpu_limit in none else cpu_limit,
                memory_limit=memory_request if memory_limit is None else None if memory_limit in none
                else memory_limit),
        )  # fmt: skip
        online = batch = stream = None
        if "online" in patterns:
            online = Online(
                port=port, workers=workers,
                scale_on="cpu" if scale_on is None or (scale_on == "lag" and all_) else scale_on,  # type: ignore[arg-type]
                min_replicas=3 if min_replicas is None else min_replicas,
                max_replicas=50 if max_replicas is None else max_replicas, replicas=replicas,
                cpu_target=cpu_target, inflight_target=inflight_target, prestop_s=prestop_seconds,
                graceful_timeout_s=graceful_timeout,
            )  # fmt: skip
        if "batch" in patterns:
            if input is None or output is None:
                raise InvalidOptionError(
                    "--pattern batch needs --input and --output (what to score, where to)"
                )
            batch = Batch(input=input, output=output, schedule=schedule, time_zone=time_zone,
                          partition=partition, backoff_limit=backoff_limit)  # fmt: skip
        if "stream" in patterns:
            if source is None or sink is None:
                raise InvalidOptionError(
                    "--pattern stream needs --source and --sink (kafka://host:port/topic)"
                )
            stream_scale = scale_on if scale_on in ("lag", "none") else "lag"
            if scale_on not in (None, "lag", "none") and len(patterns) == 1:
                raise InvalidOptionError(f"--scale-on must be lag or none for a stream, got {scale_on!r}")
            stream = Stream(
                source=source, sink=sink, dlq=dlq, group=group, partitions=partitions,
                scale_on=stream_scale,  # type: ignore[arg-type]
                min_replicas=1 if min_replicas is None or len(patterns) > 1 else min_replicas,
                max_replicas=None if len(patterns) > 1 else max_replicas,
                replicas=replicas if len(patterns) == 1 else None, lag_threshold=lag_threshold,
            )  # fmt: skip
        files = render(patterns, uri, common, info, online=online, batch=batch, stream=stream)
        written = write_tree(out, files, model=info.name)
        yamls = sorted(f for f in written if f.endswith(".yaml") and not f.startswith(("model/", "wheels/")))
        typer.echo(f"{out}: {len(written)} files for {', '.join(patterns)} ({info.name}"
                   + (f" v{info.version}" if info.version else "") + ")")  # fmt: skip
        for f in yamls:
            typer.echo(f"  {f}")
        typer.echo(f"next: docker build -t IMAGE {out}{'/PATTERN' if len(patterns) > 1 else ''}; "
                   f"kubectl apply -k {out}")  # fmt: skip
