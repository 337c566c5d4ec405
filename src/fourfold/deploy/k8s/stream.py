"""The stream pattern's resources: ``fourfold stream`` as a Deployment of one consumer group, a
PodDisruptionBudget (one rebalance at a time), and a KEDA ``ScaledObject`` on the group's Kafka lag.

Replicas never exceed the topic's partitions: a consumer beyond them is assigned none. The stream's
``/healthz`` and ``/metrics`` listen on the pod's IP (``--metrics-host 0.0.0.0``): the kubelet probes
``/healthz`` and Prometheus scrapes ``/metrics`` on the container's ``metrics`` port.
"""

from __future__ import annotations

from typing import Any

from fourfold.deploy.k8s import pods
from fourfold.deploy.model_info import ModelInfo
from fourfold.deploy.options import Common, Stream

__all__ = ["resources"]

_GRACE_S = 30  # SIGTERM: the batch in flight finishes, is checkpointed and delivered, then the process exits


def resources(common: Common, stream: Stream, model: ModelInfo, uri: str) -> dict[str, dict[str, Any]]:
    name = f"{common.name}-stream"
    lbls = pods.labels(name, "stream", model.name)
    out = {
        "deployment.yaml": _deployment(name, lbls, common, stream, model, uri),
        "pdb.yaml": _pdb(name, lbls, common),
    }
    if stream.scale_on == "lag":
        out["scaledobject.yaml"] = _scaled_object(name, lbls, common, stream)
    return out


def _health() -> dict[str, Any]:
    return {"httpGet": {"path": "/healthz", "port": "metrics"}}


def _deployment(
    name: str, lbls: dict[str, str], common: Common, stream: Stream, model: ModelInfo, uri: str
) -> dict[str, Any]:
    args = ["stream", pods.model_uri(common, model), "--source", stream.source, "--sink", stream.sink,
            "--group", stream.group, "--metrics-port", str(stream.metrics_port),
            "--metrics-host", "0.0.0.0"]  # fmt: skip
    if stream.dlq is not None:
        args += ["--dlq", stream.dlq]
    if common.store is not None:
        args += ["--store", common.store]
    health = _health()
    container = {
        "name": "stream",
        "args": args,
        "env": pods.env(common, {}),
        "ports": [{"name": "metrics", "containerPort": stream.metrics_port, "protocol": "TCP"}],
        "startupProbe": {**health, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 60},
        "livenessProbe": {**health, "periodSeconds": 15, "timeoutSeconds": 3, "failureThreshold": 3},
    }  # fmt: skip
    pod = pods.pod_spec(
        common, model, container, common.image_for("stream", model.tag), source_uri=uri,
        terminationGracePeriodSeconds=_GRACE_S,
    )  # fmt: skip
    spec: dict[str, Any] = {}
    if stream.scale_on == "none":  # under KEDA the count is its HPA's
        spec["replicas"] = stream.fixed_replicas
    spec |= {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": pods.selector(name)},
        # one consumer at a time leaves and joins the group: each change is a rebalance
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {
            "metadata": {
                "labels": lbls,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(stream.metrics_port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pods.metadata(name, common, lbls),
        "spec": spec,
    }


def _pdb(name: str, lbls: dict[str, str], common: Common) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pods.selector(name)}},
    }


def _scaled_object(name: str, lbls: dict[str, str], common: Common, stream: Stream) -> dict[str, Any]:
    servers, topic = stream.kafka
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "minReplicaCount": stream.min_replicas,
            "maxReplicaCount": stream.top_replicas,
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {
                        "bootstrapServers": servers,
                        "consumerGroup": stream.group,
                        "topic": topic,
                        "lagThreshold": str(stream.lag_threshold),
                        "offsetResetPolicy": "earliest",  # fourfold's consumer: auto.offset.reset=earliest
                        "allowIdleConsumers": "false",  # never more consumers than partitions
                    },
                }
            ],
        },
    }
