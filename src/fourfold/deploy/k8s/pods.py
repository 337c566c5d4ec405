"""What every pattern's pod shares: labels, metadata, a non-root read-only container, the writable
directories it needs, and where the model comes from (baked into the image, a volume, or pulled by an
init container).

>>> labels("fraud-online", "online", "fraud")["app.kubernetes.io/name"]
'fraud-online'
"""

from __future__ import annotations

from typing import Any

from fourfold.deploy.model_info import ModelInfo
from fourfold.deploy.options import Common, Pattern

__all__ = ["IMAGE_MODEL", "UID", "labels", "metadata", "model_uri", "pod_spec", "selector"]

UID = 10001  # the image's fourfold user (Dockerfile); fixed so runAsNonRoot can be verified
IMAGE_MODEL = "/opt/fourfold/model"  # the package baked into the image (--model-from image)
_VOLUME_MODEL = "/models"  # the claim (--model-from volume) or the init container's copy (pull)
_HOME = "/var/lib/fourfold"  # FOURFOLD_HOME: caches, the default SQLite store


def labels(name: str, pattern: Pattern, model: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": pattern,
        "app.kubernetes.io/part-of": "fourfold",
        "app.kubernetes.io/managed-by": "fourfold-deploy",
        "fourfold.dev/model": model[:63].rstrip("-_."),
    }


def selector(name: str) -> dict[str, str]:
    """The label selector of a workload: its name alone (labels that change must not be in it)."""
    return {"app.kubernetes.io/name": name}


def metadata(name: str, common: Common, lbls: dict[str, str], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if common.namespace is not None:
        out["namespace"] = common.namespace
    out["labels"] = dict(lbls)
    out.update(extra)
    return out


def model_uri(common: Common, model: ModelInfo) -> str:
    """The URI the container's command is given: a package directory inside the pod."""
    if common.model_from == "image":
        return IMAGE_MODEL
    if common.model_from == "volume":
        return f"{_VOLUME_MODEL}/{common.model_path}"
    return f"{_VOLUME_MODEL}/{model.name}"


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
    }


def env(common: Common, extra: dict[str, str]) -> list[dict[str, str]]:
    values = {"FOURFOLD_HOME": _HOME, **extra}
    if common.store is not None:
        values["FOURFOLD_STORE"] = common.store
    values.update(common.env)
    return [{"name": k, "value": v} for k, v in values.items()]


def pod_spec(
    common: Common,
    model: ModelInfo,
    container: dict[str, Any],
    image: str,
    *,
    source_uri: str,
    **extra: Any,
) -> dict[str, Any]:
    """A pod around ``container``: non-root, read-only root, ``/tmp`` and ``FOURFOLD_HOME`` on emptyDirs,
    the model mounted where :func:`model_uri` points. ``source_uri`` is what ``--model-from pull`` pulls."""
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": _HOME},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    init: list[dict[str, Any]] = []
    if common.model_from == "volume":
        mounts.append({"name": "model", "mountPath": _VOLUME_MODEL, "readOnly": True})
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": common.model_claim, "readOnly": True}}
        )
    elif common.model_from == "pull":
        mounts.append({"name": "model", "mountPath": _VOLUME_MODEL, "readOnly": True})
        volumes.append({"name": "model", "emptyDir": {"sizeLimit": "4Gi"}})
        init.append(
            {
                "name": "pull-model",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["models", "pull", source_uri, "--to", model_uri(common, model)],
                "env": env(common, {}),
                "resources": common.resources.to_k8s(),
                "securityContext": _security(),
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "home", "mountPath": _HOME},
                    {"name": "model", "mountPath": _VOLUME_MODEL},
                ],
            }
        )
    full = {
        "name": container["name"],
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        **container,
        "resources": common.resources.to_k8s(),
        "securityContext": _security(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # fourfold never calls the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **extra,
    }
    if init:
        spec["initContainers"] = init
    spec["containers"] = [full]
    spec["volumes"] = volumes
    return spec
