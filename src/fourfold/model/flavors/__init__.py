"""Flavors: one module per model framework, all behind the :class:`~fourfold.model.flavors.base.Flavor`
contract. Framework libraries are imported only when a flavor of theirs is used."""

from __future__ import annotations

from typing import Any

from fourfold.errors import UnsupportedModelError
from fourfold.model.flavors.base import Flavor, NativeModel, SavedModel
from fourfold.model.flavors.lightgbm import LightGBMFlavor
from fourfold.model.flavors.onnx import OnnxFlavor
from fourfold.model.flavors.sklearn import SklearnFlavor
from fourfold.model.flavors.torch import TorchFlavor
from fourfold.model.flavors.xgboost import XGBoostFlavor

__all__ = ["FLAVORS", "Flavor", "NativeModel", "SavedModel", "flavor_for", "get_flavor"]

# Order matters: XGBoost and LightGBM wrappers are scikit-learn estimators too.
_ORDER: tuple[Flavor, ...] = (XGBoostFlavor(), LightGBMFlavor(), TorchFlavor(), OnnxFlavor(), SklearnFlavor())
FLAVORS: dict[str, Flavor] = {f.name: f for f in _ORDER}


def flavor_for(model: Any) -> Flavor:
    for flavor in FLAVORS.values():
        if flavor.matches(model):
            return flavor
    raise UnsupportedModelError(
        f"no flavor knows models of type {type(model).__module__}.{type(model).__qualname__}; "
        f"supported: {', '.join(FLAVORS)}"
    )


def get_flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise UnsupportedModelError(f"unknown flavor {name!r}; known: {', '.join(FLAVORS)}") from None
