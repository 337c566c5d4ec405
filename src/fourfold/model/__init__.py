"""The model core: package format, signature, flavors, runtimes and the predictor."""

from __future__ import annotations

from fourfold.model.package import ModelPackage, load_package, save_model
from fourfold.model.predictor import Predictor
from fourfold.model.signature import Feature, Output, Signature, infer_signature

__all__ = [
    "Feature",
    "ModelPackage",
    "Output",
    "Predictor",
    "Signature",
    "infer_signature",
    "load_package",
    "save_model",
]
