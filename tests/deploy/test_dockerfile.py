"""The Dockerfiles: they parse, pass hadolint, run as a non-root user on a slim base, install only the
extras the pattern and the model need, and bake the model in only when asked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from deployed import PATTERN_ARGS
from fourfold.deploy import Common, ModelInfo, Online, render
from fourfold.deploy.dockerfile import BASE


def _parse(path: Path) -> list[dict[str, Any]]:
    # read from the file: setting a parser's content writes ./Dockerfile
    return list(DockerfileParser(path=str(path)).structure)


def _installed(text: str) -> set[str]:
    (spec,) = re.findall(r'"fourfold(?:\[([a-z,]*)\])?==[0-9.]+"', text)
    return set(spec.split(",")) if spec else set()


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("hadolint")
    return subprocess.run([str(binary), "--failure-threshold", "info", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "extras"), [("online", {"serve"}), ("batch", {"cloud"}), ("stream", {"stream"})]
)
def test_each_pattern_installs_only_its_extras(pattern: str, extras: set[str], generate: Any) -> None:
    out = generate("--pattern", pattern, *PATTERN_ARGS[pattern])
    text = (out / "Dockerfile").read_text()
    assert _installed(text) == extras  # the sklearn model needs no extra; batch's s3:// needs cloud
    steps = _parse(out / "Dockerfile")
    froms = [s["value"] for s in steps if s["instruction"] == "FROM"]
    assert froms == [f"{BASE} AS build", BASE]
    assert "slim" in BASE
    users = [s["value"] for s in steps if s["instruction"] == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    # the last USER comes after every RUN of the final stage: nothing runs as root at run time
    last_user = max(i for i, s in enumerate(steps) if s["instruction"] == "USER")
    assert all(i < last_user for i, s in enumerate(steps) if s["instruction"] == "RUN")
    assert any(s["instruction"] == "COPY" and s["value"].startswith("model/ ") for s in steps)
    assert (out / "model" / "fourfold.yaml").is_file()
    lint = _hadolint(out / "Dockerfile")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hadolint_catches_what_we_avoid(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install fourfold\nUSER root\n")
    assert _hadolint(bad).returncode != 0


def test_the_model_decides_the_rest() -> None:
    info = ModelInfo("fraud", "3", "xgboost", "onnx", reads_store=False, path=None)
    files = render(["online"], "models:/fraud/3", Common(name="fraud"), info, online=Online())
    text = str(files["Dockerfile"])
    assert _installed(text) == {"serve", "xgboost", "onnx"}
    assert "libgomp1" in text  # XGBoost's OpenMP runtime, absent from the slim base
    assert "model" not in files  # no package directory to copy (path=None)
    pulled = render(["online"], "models:/fraud/3", Common(name="fraud", model_from="pull",
                    env=(("MLFLOW_TRACKING_URI", "http://m:5000"),)), info, online=Online())  # fmt: skip
    text = str(pulled["Dockerfile"])
    assert "mlflow" in _installed(text)
    assert "COPY model/" not in text
    sk = ModelInfo("fraud", "3", "sklearn", "native", reads_store=False, path=None)
    assert "libgomp1" not in str(render(["online"], "models:/fraud/3", Common(name="fraud"), sk,
                                        online=Online())["Dockerfile"])  # fmt: skip


def test_the_baked_model_is_readable_by_the_image_user(generate: Any) -> None:
    out = generate("--pattern", "online")
    for p in [out / "model", *(out / "model").rglob("*")]:
        assert p.stat().st_mode & 0o004, p  # others may read: Docker copies it as root's
