"""``fourfold deploy k8s``: a model's patterns -> the files of a kustomize base, per pattern.

    >>> # files = render(["online"], "models:/fraud/production", common, online=Online())
    >>> # write_tree(Path("deploy/fraud"), files, model="fraud")

One pattern fills the output directory itself; several (``--all``) get a directory each
(``online/``, ``batch/``, ``stream/``, each a base with its own Dockerfile and image) and a
``kustomization.yaml`` above them naming the three.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fourfold.deploy import dockerfile
from fourfold.deploy.k8s import batch as k8s_batch
from fourfold.deploy.k8s import online as k8s_online
from fourfold.deploy.k8s import stream as k8s_stream
from fourfold.deploy.model_info import OPENMP_FLAVORS, ModelInfo
from fourfold.deploy.options import Batch, Common, Online, Pattern, Stream
from fourfold.deploy.output import to_yaml
from fourfold.errors import InvalidOptionError

__all__ = ["ADAPTER_VALUES", "check", "render"]

ADAPTER_VALUES = "prometheus-adapter-values.yaml"
_WHEELS_README = (
    "Put a fourfold wheel here (`pip wheel --no-deps -w wheels/ /path/to/fourfold`) to build the image\n"
    "without a package index that has fourfold; the Dockerfile installs from here first.\n"
)


def check(
    patterns: Sequence[Pattern],
    uri: str,
    common: Common,
    model: ModelInfo,
    *,
    online: Online | None = None,
    batch: Batch | None = None,
    stream: Stream | None = None,
) -> None:
    """The rules between options, and between the options and the model."""
    if not patterns:
        raise InvalidOptionError("--pattern: give online, batch or stream (or --all)")
    needed = {"online": online, "batch": batch, "stream": stream}
    for p in patterns:
        if needed[p] is None:
            raise InvalidOptionError(f"--pattern {p}: its options are missing")
    if len(patterns) > 1 and common.image is not None and "{pattern}" not in common.image:
        raise InvalidOptionError(
            f"--image {common.image!r} with --all: each pattern has its own image (its own extras); "
            "put {pattern} in it, e.g. registry.example.com/fraud-{pattern}:3"
        )
    if common.model_from == "pull" and not uri.startswith("models:/"):
        raise InvalidOptionError(
            f"--model-from pull: the pod pulls a models:/ URI from the registry, got {uri!r:.120}; a "
            "package directory goes into the image (--model-from image) or a volume (--model-from volume)"
        )
    if common.model_from == "pull" and "MLFLOW_TRACKING_URI" not in dict(common.env):
        raise InvalidOptionError(
            "--model-from pull: the init container pulls from MLflow's registry; give its address with "
            "--env MLFLOW_TRACKING_URI=http://mlflow.example:5000"
        )
    if "stream" in patterns and not common.shared_store:
        raise InvalidOptionError(
            "--store: a stream's state and checkpoints must live where every replica reads them (a "
            f"partition moves between pods on a rebalance); give a redis:// URL, got {common.store!r}"
        )
    if "online" in patterns and model.reads_store and not common.shared_store:
        raise InvalidOptionError(
            f"--store: model {model.name!r} reads windowed or entity features from the online store, "
            f"which every replica must reach; give a redis:// URL, got {common.store!r}"
        )


def render(
    patterns: Sequence[Pattern],
    uri: str,
    common: Common,
    model: ModelInfo,
    *,
    online: Online | None = None,
    batch: Batch | None = None,
    stream: Stream | None = None,
) -> dict[str, str | Path]:
    """Every file to write, by its path in the output directory (a :class:`Path` is a directory to
    copy: the model package, for ``--model-from image``)."""
    check(patterns, uri, common, model, online=online, batch=batch, stream=stream)
    files: dict[str, str | Path] = {}
    for p in patterns:
        prefix = f"{p}/" if len(patterns) > 1 else ""
        for rel, content in _one(p, uri, common, model, online, batch, stream).items():
            files[prefix + rel] = content
    if len(patterns) > 1:
        files["kustomization.yaml"] = _kustomization(list(patterns))
    return files


def _one(
    pattern: Pattern,
    uri: str,
    common: Common,
    model: ModelInfo,
    online: Online | None,
    batch: Batch | None,
    stream: Stream | None,
) -> dict[str, str | Path]:
    resources: dict[str, dict[str, Any]]
    port = None
    batch_extras: tuple[str, ...] = ()
    if pattern == "online":
        assert online is not None
        resources, port = k8s_online.resources(common, online, model, uri), online.port
    elif pattern == "batch":
        assert batch is not None
        resources, batch_extras = k8s_batch.resources(common, batch, model, uri), batch.extras
    else:
        assert stream is not None
        resources = k8s_stream.resources(common, stream, model, uri)
    files: dict[str, str | Path] = {rel: to_yaml(res) for rel, res in resources.items()}
    files["kustomization.yaml"] = _kustomization(list(resources))
    if pattern == "online" and online is not None and online.scale_on == "inflight":
        files[ADAPTER_VALUES] = (
            "# prometheus-adapter (Helm chart prometheus-community/prometheus-adapter) values: exposes\n"
            "# the server's in-flight requests per pod as the custom metric the HPA scales on.\n"
            "#   helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \\\n"
            f"#     -n monitoring -f {ADAPTER_VALUES}\n" + to_yaml(k8s_online.adapter_rules())
        )
    extras = dockerfile.extras_for(pattern, model.extras, batch_extras)
    if common.model_from == "pull":
        extras = (*extras, "mlflow")  # the init container resolves models:/ URIs from MLflow's registry
    title = f"model {model.name!r}" + (f" v{model.version}" if model.version else "")
    files["Dockerfile"] = dockerfile.dockerfile(
        pattern, extras, bake_model=common.model_from == "image", openmp=model.flavor in OPENMP_FLAVORS,
        port=port, title=title,
    )  # fmt: skip
    files["wheels/README.md"] = _WHEELS_README
    if common.model_from == "image" and model.path is not None:
        files["model"] = model.path
    return files


def _kustomization(resources: list[str]) -> str:
    return to_yaml(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}
    )
