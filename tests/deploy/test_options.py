"""Options Kubernetes or fourfold would refuse later are refused now, by the CLI, naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployed import PATTERN_ARGS, invoke
from fourfold.deploy import Batch, Common, ModelInfo, Online, Resources, Stream, render
from fourfold.deploy.checks import cron, dns_label, image_ref, quantity
from fourfold.errors import InvalidOptionError

BAD = [
    (["--pattern", "online", "--port", "70000"], "--port must be an integer in 1..65535, got 70000"),
    (["--pattern", "online", "--min-replicas", "10", "--max-replicas", "5"],
     "--max-replicas (5) must be at least --min-replicas (10)"),
    (["--pattern", "online", "--cpu-target", "0"], "--cpu-target must be an integer in 1..100"),
    (["--pattern", "online", "--cpu-target", "150"], "--cpu-target must be an integer in 1..100"),
    (["--pattern", "online", "--replicas", "4"], "--replicas is for --scale-on none"),
    (["--pattern", "online", "--name", "Fraud_Online"], "--name must be a DNS label"),
    (["--pattern", "online", "--name", "9fraud"], "--name must be a DNS label"),
    (["--pattern", "online", "--namespace", "-x"], "--namespace must be a DNS label"),
    (["--pattern", "online", "--image", "Registry/UPPER:tag"], "--image must be an image reference"),
    (["--pattern", "online", "--cpu-request", "2", "--cpu-limit", "1"],
     "--cpu-limit (1) must be at least --cpu-request (2)"),
    (["--pattern", "online", "--memory-request", "lots"], "--memory-request must be a Kubernetes quantity"),
    (["--pattern", "online", "--model-from", "volume"], "--model-from volume needs --model-path"),
    (["--pattern", "online", "--model-from", "pull"], "--model-from pull: the pod pulls a models:/ URI"),
    (["--pattern", "online", "--env", "1X=a"], "--env '1X'"),
    (["--pattern", "batch", *PATTERN_ARGS["batch"], "--schedule", "0 25 * * *"], "must be five cron"),
    (["--pattern", "batch", *PATTERN_ARGS["batch"], "--schedule", "0 2 * *"], "must be five cron"),
    (["--pattern", "batch", *PATTERN_ARGS["batch"], "--schedule", "0 2 L * *"], "no 'L' or '#'"),
    (["--pattern", "batch", *PATTERN_ARGS["batch"], "--schedule", "0 2 * * 7"], "day-of-week must be 0-6"),
    (["--pattern", "batch", "--input", "in/"], "--pattern batch needs --input and --output"),
    (["--pattern", "stream", *PATTERN_ARGS["stream"], "--partitions", "4", "--max-replicas", "6"],
     "--max-replicas (6) must not be over --partitions (4)"),
    (["--pattern", "stream", *PATTERN_ARGS["stream"], "--scale-on", "none", "--replicas", "9"],
     "--replicas (9) must not be over --partitions (8)"),
    (["--pattern", "stream", "--source", "events.jsonl", "--sink", "kafka://k:9092/d", "--store", "redis://r:6379"],
     "--source must be kafka://host:port/topic or redis-stream://"),
    (["--pattern", "stream", "--source", "kafka://k:9092/a", "--sink", "kafka://k:9092/d"],
     "--store: a stream's state and checkpoints"),
    (["--pattern", "stream", "--source", "kafka://k:9092/a", "--sink", "kafka://k:9092/d", "--store", "sqlite:///x.db"],
     "give a redis:// URL"),
    (["--pattern", "stream", "--source", "redis-stream://r:6379/0/ev", "--sink", "kafka://k:9092/d",
      "--store", "redis://r:6379"], "--scale-on lag reads the Kafka consumer group's lag"),
    (["--all", *PATTERN_ARGS["batch"], *PATTERN_ARGS["stream"], "--image", "fraud:3"],
     "--image 'fraud:3' with --all"),
    ([], "give one of --pattern online|batch|stream or --all"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_option_is_refused_naming_it(
    args: list[str], message: str, package: Path, tmp_path: Path
) -> None:
    result = invoke("deploy", "k8s", str(package), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    # the console entry point prints a FourfoldError's message and exits 1 (fourfold.cli.main)
    assert isinstance(result.exception, InvalidOptionError), result.exception
    assert message in str(result.exception)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_model_that_reads_the_store_needs_a_shared_one() -> None:
    info = ModelInfo("fraud", "3", "xgboost", "onnx", reads_store=True, path=None)
    with pytest.raises(InvalidOptionError, match="reads windowed or entity features"):
        render(["online"], "models:/fraud/3", Common(name="fraud"), info, online=Online())
    files = render(["online"], "models:/fraud/3", Common(name="fraud", store="redis://r:6379/0"), info,
                   online=Online())  # fmt: skip
    assert "FOURFOLD_STORE" in str(files["deployment.yaml"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: dns_label("--name", "a" * 64), "at most 63"),
        (lambda: image_ref("--image", "fraud:"), "image reference"),
        (lambda: quantity("--cpu-request", "0", cpu=True), "more than 0"),
        (lambda: quantity("--cpu-request", "0.1m", cpu=True), "at least 1m"),
        (lambda: cron("--schedule", "TZ=UTC 0 2 * * *"), "--time-zone"),
        (lambda: Resources(memory_request="2Gi", memory_limit="1Gi"), "--memory-limit"),
        (
            lambda: Stream(source="kafka://k:9092/a", sink="kafka://k:9092/a"),
            "--sink must not be the --source",
        ),
        (
            lambda: Stream(source="kafka://k:9092/a", sink="kafka://k:9092/b", min_replicas=9),
            "--min-replicas",
        ),
        (lambda: Batch(input="a", output="a"), "--output must not be the --input"),
        (lambda: Online(graceful_timeout_s=float("nan")), "--graceful-timeout"),
    ],
)
def test_the_value_objects_check_themselves(call: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        call()


def test_good_values_pass() -> None:
    assert image_ref("--image", "registry.example.com:5000/team/fraud-online:3@sha256:" + "a" * 64)
    assert quantity("--memory-request", "512Mi", cpu=False) == 512 * 2**20
    assert quantity("--cpu-request", "250m", cpu=True) == 0.25
    assert cron("--schedule", "@daily") == "@daily"
    assert cron("--schedule", "*/15 2-4 * * MON-FRI") == "*/15 2-4 * * MON-FRI"
    assert Resources(cpu_request="2500m", cpu_limit=None).cores == 2


def test_a_model_name_becomes_a_dns_label(generate: Any, tmp_path: Path) -> None:
    from conftest import build
    from fourfold import save_model

    model, _, table = build("sklearn_gbdt")
    pkg = save_model(model, tmp_path / "pkg", name="Fraud_Model.v2", sample=table.slice(0, 20)).path
    out = generate("--pattern", "online", uri=str(pkg))
    assert "name: fraud-model-v2-online" in (out / "deployment.yaml").read_text()
