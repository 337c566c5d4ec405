"""The online pattern's resources: ``fourfold serve`` as a Deployment, its Service, a PodDisruptionBudget,
an ``autoscaling/v2`` HPA (CPU, or the server's in-flight requests as a Pods metric), and the
prometheus-adapter rule that makes that metric visible to the HPA.

The probes are the server's own routes: readiness ``/v2/health/ready`` (the model is loaded), liveness
``/healthz`` (the process answers). On termination the pod sleeps ``prestop_s`` in ``preStop`` while the
endpoints controller takes it out of the Service, then SIGTERM gives the server ``graceful_timeout_s`` to
finish what is in flight; ``terminationGracePeriodSeconds`` covers both and 5 s more.
"""

from __future__ import annotations

from typing import Any

from fourfold.deploy.k8s import pods
from fourfold.deploy.model_info import ModelInfo
from fourfold.deploy.options import Common, Online

__all__ = ["INFLIGHT_METRIC", "LIVENESS", "READINESS", "adapter_rules", "resources"]

READINESS = "/v2/health/ready"
LIVENESS = "/healthz"
INFLIGHT_METRIC = "fourfold_inflight_requests"  # online/metrics.py: a gauge summed over the workers
# per pod: the gauge averaged over a minute (a scrape is a moment; the HPA acts on the trend)
_METRICS_QUERY = "sum(avg_over_time(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)"


def resources(common: Common, online: Online, model: ModelInfo, uri: str) -> dict[str, dict[str, Any]]:
    """``{file name: resource}`` for the online pattern (the adapter rule is not a resource: see
    :func:`adapter_rules`)."""
    name = f"{common.name}-online"
    lbls = pods.labels(name, "online", model.name)
    out = {
        "deployment.yaml": _deployment(name, lbls, common, online, model, uri),
        "service.yaml": _service(name, lbls, common, online),
        "pdb.yaml": _pdb(name, lbls, common),
    }
    if online.scale_on != "none":
        out["hpa.yaml"] = _hpa(name, lbls, common, online)
    return out


def _deployment(
    name: str, lbls: dict[str, str], common: Common, online: Online, model: ModelInfo, uri: str
) -> dict[str, Any]:
    workers = online.workers_for(common.resources)
    settings = {
        "FOURFOLD_HOST": "0.0.0.0",  # the server binds 127.0.0.1 by default: the kubelet probes the pod IP
        "FOURFOLD_PORT": str(online.port),
        "FOURFOLD_WORKERS": str(workers),
        "FOURFOLD_THREADS": str(max(1, common.resources.cores // workers)),
        "FOURFOLD_GRACEFUL_TIMEOUT_S": f"{online.graceful_timeout_s:g}",
        # the model is a directory in the pod: a new version is a new rollout, not a registry poll
        "FOURFOLD_RELOAD_INTERVAL_S": "0",
    }
    probe = {"port": "http"}
    container = {
        "name": "serve",
        "args": ["serve", pods.model_uri(common, model)],
        "env": pods.env(common, settings),
        "ports": [{"name": "http", "containerPort": online.port, "protocol": "TCP"}],
        "startupProbe": {"httpGet": {"path": LIVENESS, **probe}, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {"httpGet": {"path": READINESS, **probe},
                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": LIVENESS, **probe},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(online.prestop_s)]}}},
    }  # fmt: skip
    pod = pods.pod_spec(
        common, model, container, common.image_for("online", model.tag), source_uri=uri,
        terminationGracePeriodSeconds=online.termination_grace_s,
    )  # fmt: skip
    spec: dict[str, Any] = {}
    if online.scale_on == "none":  # under an HPA the count is the HPA's: `kubectl apply` must not reset it
        spec["replicas"] = online.replicas if online.replicas is not None else online.min_replicas
    spec |= {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": pods.selector(name)},
        # surge first: a rollout never serves with fewer ready pods than it had
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": lbls,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(online.port),
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


def _service(name: str, lbls: dict[str, str], common: Common, online: Online) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {
            "type": "ClusterIP",
            "selector": pods.selector(name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _pdb(name: str, lbls: dict[str, str], common: Common) -> dict[str, Any]:
    # maxUnavailable, not minAvailable: one pod at a time at 3 replicas as at 50 (a minAvailable of 2
    # would let a drain evict 48 of 50 at once)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pods.selector(name)}},
    }


def _hpa(name: str, lbls: dict[str, str], common: Common, online: Online) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    if online.scale_on == "cpu":
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": online.cpu_target},
                },
            }
        )
    else:
        # the requests in flight per pod; CPU stays as a second signal (the HPA takes the larger count)
        target = online.inflight_for(common.resources)
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": INFLIGHT_METRIC},
                    "target": {"type": "AverageValue", "averageValue": str(target)},
                },
            }
        )
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": online.cpu_target},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": online.min_replicas,
            "maxReplicas": online.max_replicas,
            "metrics": metrics,
            # Kubernetes' defaults, written out: up at once (double, or +4 pods, every 15 s), down only
            # after 5 minutes below target - a spike is shed by the server meanwhile (docs/online.md)
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                },
            },
        },
    }


def adapter_rules() -> dict[str, Any]:
    """Values for the prometheus-adapter chart (``rules.custom``): ``fourfold_inflight_requests`` of each
    pod, averaged over a minute, as the custom metric the HPA's Pods metric names. Prometheus must keep
    the ``namespace`` and ``pod`` labels on scraped series (the usual ``kubernetes-pods`` job does)."""
    return {
        "rules": {
            "custom": [
                {
                    "seriesQuery": f'{INFLIGHT_METRIC}{{namespace!="",pod!=""}}',
                    "resources": {
                        "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
                    },
                    "name": {"matches": f"^{INFLIGHT_METRIC}$", "as": INFLIGHT_METRIC},
                    "metricsQuery": _METRICS_QUERY,
                }
            ]
        }
    }
