"""Every generated manifest against the Kubernetes schemas (kubernetes-validate --strict, a current and an
older release), the KEDA ScaledObject against the CRD's models, the bases through `kubectl kustomize`, and
what those validators do not check: cron syntax, a Job's restartPolicy, a PDB's one bound, the grace
period against the drain, probe paths against the server's routes, and the seed's numbers."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from deployed import PATTERN_ARGS, load_resources, resource_files

# the current release kubernetes-validate ships, and the oldest one with every field used GA
# (podFailurePolicy: 1.31; CronJob timeZone: 1.27)
VERSIONS = ("1.37.0", "1.31.0")
KINDS = {
    "online": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"},
    "batch": {"CronJob"},
    "stream": {"Deployment", "PodDisruptionBudget", "ScaledObject"},
}


def _validate_builtin(doc: dict[str, Any]) -> None:
    for version in VERSIONS:
        kv.validate(doc, version, strict=True)  # raises; a kind without a schema raises too


@pytest.mark.parametrize("pattern", ["online", "batch", "stream"])
def test_every_resource_passes_the_kubernetes_schemas_strictly(pattern: str, generate: Any) -> None:
    out = generate("--pattern", pattern, *PATTERN_ARGS[pattern])
    docs = load_resources(out)
    assert set(docs) == KINDS[pattern]
    for kind, doc in docs.items():
        if kind != "ScaledObject":
            _validate_builtin(doc)


def test_the_validator_is_strict_enough_to_fail(generate: Any) -> None:
    doc = load_resources(generate("--pattern", "online"))["Deployment"]
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {"path": "/x"}
    with pytest.raises(kv.ValidationError):
        _validate_builtin(doc)


def test_the_cli_validator_passes_all_and_warns_only_on_the_crd_and_kustomization(generate: Any) -> None:
    out = generate("--all", *PATTERN_ARGS["batch"], *PATTERN_ARGS["stream"],
                   "--image", "registry.example.com/fraud-{pattern}:3")  # fmt: skip
    files = [str(p) for p in resource_files(out)] + [str(p) for p in out.rglob("kustomization.yaml")]
    cli = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run([str(cli), "--strict", *files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    warnings = [line for line in run.stdout.splitlines() if not line.startswith("INFO")]
    # kubernetes-validate has no schema for CRDs or kustomize's file: they WARN with exit code 0
    assert warnings
    assert all("ScaledObject" in w or "Kustomization" in w for w in warnings), warnings
    passed = [line for line in run.stdout.splitlines() if line.startswith("INFO") and "passed" in line]
    assert len(passed) == 7  # 4 online + 1 batch + 2 stream; the stream's ScaledObject only warns
    for w in (line for line in run.stdout.splitlines() if "ScaledObject" in line):
        assert w.startswith("WARN")


def test_the_scaled_object_matches_the_keda_crd_models(generate: Any) -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    doc = load_resources(generate("--pattern", "stream", *PATTERN_ARGS["stream"]))["ScaledObject"]
    parsed = ScaledObject.model_validate(doc)
    # the models ignore unknown fields (as the API server prunes them): a field they drop is a typo
    assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == doc
    assert parsed.spec is not None
    assert parsed.spec.triggers[0].type == "kafka"

    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["maxReplicaCount"] = "eight"
    with pytest.raises(ValueError, match="maxReplicaCount"):
        ScaledObject.model_validate(broken)
    typo = yaml.safe_load(yaml.safe_dump(doc))
    typo["spec"]["minReplicas"] = 2
    assert ScaledObject.model_validate(typo).model_dump(by_alias=True, exclude_none=True, mode="json") != typo


def test_kubectl_kustomize_builds_every_base(generate: Any, kubectl: Path) -> None:
    out = generate("--all", *PATTERN_ARGS["batch"], *PATTERN_ARGS["stream"],
                   "--image", "fraud-{pattern}:3", "--namespace", "scoring")  # fmt: skip
    built = subprocess.run([str(kubectl), "kustomize", str(out)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = list(yaml.safe_load_all(built.stdout))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([*KINDS["online"], *KINDS["batch"], *KINDS["stream"]])
    assert {d["metadata"]["namespace"] for d in docs} == {"scoring"}
    images = {c["image"] for d in docs for c in _containers(d)}
    assert images == {"fraud-online:3", "fraud-batch:3", "fraud-stream:3"}
    for d in docs:
        if d["kind"] != "ScaledObject":
            _validate_builtin(d)


def test_kubectl_kustomize_refuses_a_broken_base(generate: Any, kubectl: Path) -> None:
    out = generate("--pattern", "online")
    (out / "kustomization.yaml").write_text((out / "kustomization.yaml").read_text() + "- missing.yaml\n")
    built = subprocess.run([str(kubectl), "kustomize", str(out)], capture_output=True, text=True, timeout=60)
    assert built.returncode != 0
    assert "missing.yaml" in built.stderr


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec.get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


# -- what the schemas do not check -------------------------------------------------------------------


def test_the_seed_numbers_are_the_defaults(generate: Any) -> None:
    online = load_resources(generate("--pattern", "online"))
    hpa = online["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 50)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        }
    ]
    assert hpa["scaleTargetRef"]["name"] == online["Deployment"]["metadata"]["name"]
    assert "replicas" not in online["Deployment"]["spec"]  # the HPA's to set, not each `kubectl apply`'s

    stream = load_resources(generate("--pattern", "stream", *PATTERN_ARGS["stream"]))
    so = stream["ScaledObject"]["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (1, 8)
    trigger = so["triggers"][0]["metadata"]
    assert trigger == {"bootstrapServers": "kafka-0:9092,kafka-1:9092", "consumerGroup": "fourfold",
                       "topic": "payments", "lagThreshold": "10000", "offsetResetPolicy": "earliest",
                       "allowIdleConsumers": "false"}  # fmt: skip
    assert so["scaleTargetRef"]["name"] == stream["Deployment"]["metadata"]["name"]

    cron = load_resources(generate("--pattern", "batch", *PATTERN_ARGS["batch"]))["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["jobTemplate"]["spec"]["backoffLimit"] == 2


def test_inflight_scaling_is_a_pods_metric_the_adapter_rule_exposes(generate: Any) -> None:
    out = generate("--pattern", "online", "--scale-on", "inflight", "--cpu-request", "2", "--cpu-limit", "2")
    hpa = load_resources(out)["HorizontalPodAutoscaler"]["spec"]
    pods = [m for m in hpa["metrics"] if m["type"] == "Pods"]
    target = {"type": "AverageValue", "averageValue": "307"}
    assert pods == [
        {"type": "Pods", "pods": {"metric": {"name": "fourfold_inflight_requests"}, "target": target}}
    ]
    # 2 cores -> 2 workers x 256 admitted in flight; the target is 60 % of it
    assert any(m["type"] == "Resource" for m in hpa["metrics"])
    values = yaml.safe_load((out / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["seriesQuery"].startswith("fourfold_inflight_requests{")
    assert rule["name"]["as"] == "fourfold_inflight_requests"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert (
        "prometheus-adapter-values.yaml"
        not in yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    )


def test_the_inflight_metric_is_one_the_server_exports() -> None:
    from fourfold.deploy.k8s.online import INFLIGHT_METRIC
    from fourfold.online.metrics import Metrics

    metrics = Metrics()
    try:
        assert f"# TYPE {INFLIGHT_METRIC} gauge" in metrics.render().decode()
    finally:
        metrics.close()


def test_the_deploy_defaults_are_the_server_defaults() -> None:
    from fourfold.deploy import options
    from fourfold.online.settings import ServeSettings

    s = ServeSettings()
    assert s.port == options.SERVE_PORT
    assert s.graceful_timeout_s == options.GRACEFUL_TIMEOUT_S
    assert s.max_inflight == options.MAX_INFLIGHT


def test_the_probes_are_routes_of_the_server(generate: Any, package: Path) -> None:
    from fourfold.online.app import build_app
    from fourfold.online.settings import ServeSettings

    routes = build_app(ServeSettings(model=str(package))).exact
    container = load_resources(generate("--pattern", "online"))["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert "GET" in routes[path], path
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["readinessProbe"]["httpGet"]["port"]
    assert port == container["ports"][0]["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FOURFOLD_HOST"] == "0.0.0.0"
    assert env["FOURFOLD_PORT"] == str(container["ports"][0]["containerPort"])


def test_the_stream_probes_and_scrape_reach_the_health_server_it_starts(generate: Any) -> None:
    import urllib.error
    import urllib.request

    from fourfold.stream import StreamOptions
    from fourfold.stream.metrics import HealthServer, StreamMetrics

    deployment = load_resources(generate("--pattern", "stream", *PATTERN_ARGS["stream"]))["Deployment"]
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    args = container["args"]
    port = int(args[args.index("--metrics-port") + 1])
    host = args[args.index("--metrics-host") + 1]
    assert host == "0.0.0.0"  # the kubelet and Prometheus come over the pod's IP, not its loopback
    [declared] = container["ports"]
    assert (declared["name"], declared["containerPort"]) == ("metrics", port)
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # the arguments are the stream command's own: its options take them
    assert (
        StreamOptions("m", "in.jsonl", "out.jsonl", metrics_port=port, metrics_host=host).metrics_host == host
    )
    path = container["livenessProbe"]["httpGet"]["path"]
    server = HealthServer(StreamMetrics(prometheus=True), lambda: (True, "ok"), 0, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=2) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2) as r:
            metrics = r.read()
        assert b"fourfold_stream_events_total" in metrics
    finally:
        server.close()
    sick = HealthServer(StreamMetrics(), lambda: (False, "stalled"), 0, host="127.0.0.1")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{sick.port}{path}", timeout=2)
        assert err.value.code == 503
        err.value.close()
    finally:
        sick.close()


@pytest.mark.parametrize("args", [[], ["--prestop-seconds", "20", "--graceful-timeout", "45.5"]])
def test_the_grace_period_covers_the_prestop_sleep_and_the_drain(generate: Any, args: list[str]) -> None:
    pod = load_resources(generate("--pattern", "online", *args))["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float({e["name"]: e["value"] for e in container["env"]}["FOURFOLD_GRACEFUL_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= sleep + math.ceil(drain)
    assert sleep == (int(args[1]) if args else 5)
    assert drain == (float(args[3]) if args else 10.0)


def test_pdbs_have_exactly_one_bound_and_select_their_pods(generate: Any) -> None:
    for pattern in ("online", "stream"):
        docs = load_resources(generate("--pattern", pattern, *PATTERN_ARGS[pattern]))
        pdb = docs["PodDisruptionBudget"]["spec"]
        assert len({"minAvailable", "maxUnavailable"} & set(pdb)) == 1
        assert pdb["maxUnavailable"] == 1
        labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        assert docs["Deployment"]["spec"]["selector"]["matchLabels"] == pdb["selector"]["matchLabels"]


def test_the_cron_job_is_a_valid_schedule_that_never_restarts_in_place(generate: Any) -> None:
    import croniter

    out = generate("--pattern", "batch", *PATTERN_ARGS["batch"], "--schedule", "15 3 * * 1-5")
    cron = load_resources(out)["CronJob"]["spec"]
    assert cron["schedule"] == "15 3 * * 1-5"
    assert croniter.croniter.is_valid(cron["schedule"])
    job = cron["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # a podFailurePolicy requires it; Always is refused in a Job
    assert cron["timeZone"] == "Etc/UTC"
    args = pod["containers"][0]["args"]
    assert args[:2] == ["batch", "/opt/fourfold/model"]
    assert args[args.index("--partition") + 1] == "date={yesterday}"


def test_batch_exit_codes_are_the_job_outcomes(generate: Any, package: Path, tmp_path: Path) -> None:
    """The codes the podFailurePolicy fails at once are the ones `fourfold batch` exits with for a
    malformed option (2) and for too many rejected rows (3); a plain error (1) is retried."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deployed import invoke
    from fourfold.deploy.k8s.batch import FAIL_AT_ONCE

    job = load_resources(generate("--pattern", "batch", *PATTERN_ARGS["batch"]))["CronJob"]["spec"][
        "jobTemplate"
    ]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "batch", "operator": "In",
                                                             "values": [2, 3]}}  # fmt: skip
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert tuple(rules[0]["onExitCodes"]["values"]) == FAIL_AT_ONCE

    x = np.random.default_rng(1).standard_normal((40, 5))
    x[::2, 0] = np.nan  # half the rows cannot be scored
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({f"x{i}": x[:, i] for i in range(5)}), tmp_path / "in" / "part.parquet")
    base = ["batch", str(package), "-i", str(tmp_path / "in")]
    assert invoke(*base, "-o", str(tmp_path / "o1"), "--engine", "sprak").exit_code == 2
    assert invoke(*base, "-o", str(tmp_path / "o2"), "--max-rejected", "0").exit_code == 3
    assert (
        invoke("batch", str(package), "-i", str(tmp_path / "absent"), "-o", str(tmp_path / "o3")).exit_code
        == 1
    )


def test_pods_run_as_non_root_with_a_read_only_root(generate: Any, package: Path) -> None:
    from fourfold import LocalRegistry

    LocalRegistry().register(package, name="fraud")
    for pattern in ("online", "batch", "stream"):
        pull = ["--model-from", "pull", "--env", "MLFLOW_TRACKING_URI=http://mlflow:5000"]
        for model_from in (["--model-from", "image"], pull):
            uri = "models:/fraud/1" if model_from[1] == "pull" else None
            docs = load_resources(
                generate("--pattern", pattern, *PATTERN_ARGS[pattern], *model_from, uri=uri)
            )
            workload = docs.get("Deployment") or docs["CronJob"]
            for c in _containers(workload):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"]
                assert sc["runAsUser"] != 0
                assert sc["readOnlyRootFilesystem"]
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert c["resources"]["requests"]
                assert c["resources"]["limits"]


def test_pull_mode_pulls_the_uri_into_the_path_the_command_reads(generate: Any, package: Path) -> None:
    from fourfold import LocalRegistry

    LocalRegistry().register(package, name="fraud", aliases=["production"])
    out = generate("--pattern", "online", "--model-from", "pull", "--env", "MLFLOW_TRACKING_URI=http://mlflow:5000",
                   uri="models:/fraud/production")  # fmt: skip
    pod = load_resources(out)["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"][:3] == ["models", "pull", "models:/fraud/production"]
    target = init["args"][init["args"].index("--to") + 1]
    assert pod["containers"][0]["args"] == ["serve", target]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["model"]["readOnly"] is True
    assert target.startswith(mounts["model"]["mountPath"] + "/")
    assert not (out / "model").exists()  # nothing baked in


def test_volume_mode_mounts_the_claim_read_only(generate: Any) -> None:
    out = generate("--pattern", "online", "--model-from", "volume", "--model-claim", "models",
                   "--model-path", "fraud/3")  # fmt: skip
    pod = load_resources(out)["Deployment"]["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if v["name"] == "model")["persistentVolumeClaim"]
    assert claim == {"claimName": "models", "readOnly": True}
    assert pod["containers"][0]["args"] == ["serve", "/models/fraud/3"]
    assert not (out / "model").exists()
