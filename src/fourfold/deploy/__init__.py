"""Deploying a model: Kubernetes manifests (a kustomize base per pattern) and a Dockerfile per image.

Not a pattern: it writes files that run the patterns' commands (``fourfold serve``, ``batch``,
``stream``) and imports none of them - only the registry, to read the model's name, version, flavor and
runtime. ``docs/deploy.md`` tells what each resource does and why each number.

    >>> # from fourfold.deploy import Common, Online, model_info, render, write_tree
    >>> # info = model_info("models:/fraud/production")
    >>> # write_tree(Path("k8s"), render(["online"], uri, Common(name="fraud"), info, online=Online()),
    >>> #            model=info.name)
"""

from fourfold.deploy.model_info import ModelInfo, model_info
from fourfold.deploy.options import PATTERNS, Batch, Common, Online, Pattern, Resources, Stream
from fourfold.deploy.output import MARKER, write_tree
from fourfold.deploy.render import render

__all__ = [
    "MARKER",
    "PATTERNS",
    "Batch",
    "Common",
    "ModelInfo",
    "Online",
    "Pattern",
    "Resources",
    "Stream",
    "model_info",
    "render",
    "write_tree",
]
