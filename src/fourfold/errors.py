"""Errors raised by fourfold.

Every error carries an HTTP-style ``status`` so that each pattern (online, batch, streaming, embedded)
can map it without a table of its own: 4xx means the caller's input or request is wrong, 5xx means
fourfold or the environment is.

    FourfoldError (500)
    ├── InputError (422)                 input does not match the model's signature
    │   ├── MissingFeatureError          a required feature is absent
    │   ├── UnknownFeatureError          a feature the signature does not know (strict mode)
    │   ├── FeatureTypeError             a value of the wrong type
    │   ├── NullFeatureError             a null / NaN where the signature forbids it
    │   └── ShapeError                   a 2-D array with the wrong number of columns
    ├── PackageError (422)               a model package cannot be written or read
    │   ├── TamperedPackageError         a file's sha256 differs from the manifest
    │   ├── UntrustedModelError (403)    loading would run untrusted code (pickle, unknown types)
    │   └── UnsupportedModelError        no flavor knows this kind of model
    ├── RegistryError (422)
    │   ├── InvalidNameError (400)       a model name or alias that is not allowed
    │   ├── InvalidURIError (400)        a model URI that cannot be parsed
    │   └── ModelNotFoundError (404)     no such model, version or alias
    ├── ConversionError (422)            a conversion to ONNX failed
    │   └── ParityError                  the converted model disagrees with the native one
    └── MissingExtraError (501)          an optional dependency is not installed

Errors pickle (they cross process boundaries in batch and streaming workers).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConversionError",
    "FeatureTypeError",
    "FourfoldError",
    "InputError",
    "InvalidNameError",
    "InvalidURIError",
    "MissingExtraError",
    "MissingFeatureError",
    "ModelNotFoundError",
    "NullFeatureError",
    "PackageError",
    "ParityError",
    "RegistryError",
    "ShapeError",
    "TamperedPackageError",
    "UnknownFeatureError",
    "UnsupportedModelError",
    "UntrustedModelError",
]


class FourfoldError(Exception):
    """Base of every fourfold error; ``status`` is the HTTP status a server answers with."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.status, dict(self.__dict__)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"error": type, "message": ..., "status": ...}``."""
        return {"error": type(self).__name__, "message": self.message, "status": self.status}


def _rebuild(cls: type[FourfoldError], message: str, status: int, state: dict[str, Any]) -> FourfoldError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.message = message
    err.status = status
    return err


class InputError(FourfoldError):
    """The input does not match the model's signature."""

    status = 422


class MissingFeatureError(InputError):
    def __init__(self, feature: str, expected: list[str], *, model: str = "the model") -> None:
        super().__init__(
            f"feature {feature!r} is missing from the input; {model} needs: {', '.join(expected)}"
        )
        self.feature = feature


class UnknownFeatureError(InputError):
    def __init__(self, features: list[str], expected: list[str], *, model: str = "the model") -> None:
        super().__init__(
            f"unknown feature(s) {', '.join(repr(f) for f in features)} in strict mode; "
            f"{model} accepts only: {', '.join(expected)}"
        )
        self.features = features


class FeatureTypeError(InputError):
    def __init__(self, feature: str, expected: str, got: str) -> None:
        super().__init__(f"feature {feature!r} must be {expected}, got {got}")
        self.feature = feature


class NullFeatureError(InputError):
    def __init__(self, feature: str, rows: list[int]) -> None:
        shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
        super().__init__(
            f"feature {feature!r} is null or NaN in {len(rows)} row(s) (row {shown}); "
            "the signature does not allow missing values for it"
        )
        self.feature = feature
        self.rows = rows


class ShapeError(InputError):
    pass


class PackageError(FourfoldError):
    status = 422


class TamperedPackageError(PackageError):
    pass


class UntrustedModelError(PackageError):
    status = 403


class UnsupportedModelError(PackageError):
    pass


class RegistryError(FourfoldError):
    status = 422


class InvalidNameError(RegistryError):
    status = 400


class InvalidURIError(RegistryError):
    status = 400


class ModelNotFoundError(RegistryError):
    status = 404


class ConversionError(FourfoldError):
    status = 422


class ParityError(ConversionError):
    pass


class MissingExtraError(FourfoldError):
    """An optional dependency is needed: the message names the extra to install."""

    status = 501

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the {module!r} package, which is not installed; "
            f"install it with: pip install 'fourfold[{extra}]'"
        )
        self.module = module
        self.extra = extra
