"""Errors raised by fourfold.

Every error carries an HTTP-style ``status`` so that each pattern (online, batch, streaming, embedded)
can map it without a table of its own: 4xx means the caller's input or request is wrong, 5xx means
fourfold or the environment is. Each status has its own class: a call site names the cause, never a
number (``raise ConflictError(...)``, not ``ConflictError(...)``).

    FourfoldError (500)
    ├── RequestError (400)               a malformed request, header, option or argument
    │   ├── OIPError                       not the Open Inference Protocol (online.oip)
    │   └── InvalidOptionError             an option value that is not allowed (batch, serve)
    ├── UnauthorizedError (401)          a missing or wrong bearer token
    ├── NotFoundError (404)              a file, model, entity or route that does not exist
    │   └── EntityNotFoundError            an entity the store knows nothing of (when declared a 404)
    ├── ConflictError (409)              the state on disk belongs to something else (resume, runtimes)
    ├── PayloadTooLargeError (413)       a body or a batch over its limit
    ├── UnsupportedMediaTypeError (415)  a content type other than JSON
    ├── InputError (422)                 input does not match the model's signature or feature set
    │   ├── MissingFeatureError            a required feature is absent
    │   ├── UnknownFeatureError            a feature the signature does not know (strict mode)
    │   ├── FeatureTypeError               a value of the wrong type, or out of range
    │   ├── NullFeatureError               a null / NaN where the signature forbids it
    │   ├── ShapeError                     a 2-D array with the wrong number of columns
    │   ├── MissingFieldError              a field the caller must send is absent (features.assemble)
    │   ├── UnknownFieldError              a field that is neither the entity key nor a request field
    │   ├── RowsRejectedError              rows of one request the model cannot score, each with its reason
    │   └── ComputedFieldError             a field fourfold computes itself, sent by the caller
    ├── DefinitionError (422)            an invalid feature definition (features.definitions)
    ├── StateError (422)                 incremental state that cannot be used (features.state)
    │   └── NoStateError (404)             no state for the key asked for
    ├── PackageError (422)               a model package cannot be written or read
    │   ├── TamperedPackageError           a file's sha256 differs from the manifest
    │   ├── UntrustedModelError (403)      loading would run untrusted code (pickle, unknown types)
    │   └── UnsupportedModelError          no flavor knows this kind of model
    ├── RegistryError (422)
    │   ├── InvalidNameError (400)         a model name or alias that is not allowed
    │   ├── InvalidURIError (400)          a model URI that cannot be parsed
    │   └── ModelNotFoundError (404)       no such model, version or alias
    ├── ConversionError (422)            a conversion to ONNX failed
    │   └── ParityError                    the converted model disagrees with the native one
    ├── JobFailed (422)                  a batch job that ran but must not commit
    ├── StoreError (500)                 a feature store operation failed (features.stores)
    │   ├── StoreUnavailableError (503)    the store cannot be reached
    │   ├── StoreURLError (400)            a store URL that cannot be read
    │   ├── StoreInputError (422)          a namespace, entity or value the store cannot take
    │   └── FencedError (409)              a fenced transaction found another writer took over
    ├── SQLError (503)                   a SQL input could not be read (batch.sql)
    ├── MissingExtraError (501)          an optional dependency is not installed
    │   └── FlinkMissingError              PyFlink, which lives in its own environment (stream.flink.job)
    ├── MissingToolError (501)           a system tool (a C compiler) is not installed
    ├── UnavailableError (503)           not able to answer now: retry later
    │   └── OverloadedError                load shedding: too many requests in flight
    └── DeadlineExceededError (504)      the request's deadline passed before its answer

Errors pickle (they cross process boundaries in batch and streaming workers).
"""

from __future__ import annotations

from typing import Any, Self

__all__ = [
    "ComputedFieldError",
    "ConflictError",
    "ConversionError",
    "DeadlineExceededError",
    "EntityNotFoundError",
    "FeatureTypeError",
    "FourfoldError",
    "InputError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidURIError",
    "JobFailed",
    "MissingExtraError",
    "MissingFeatureError",
    "MissingFieldError",
    "MissingToolError",
    "ModelNotFoundError",
    "NotFoundError",
    "NullFeatureError",
    "OverloadedError",
    "PackageError",
    "ParityError",
    "PayloadTooLargeError",
    "RegistryError",
    "RequestError",
    "RowsRejectedError",
    "ShapeError",
    "TamperedPackageError",
    "UnauthorizedError",
    "UnavailableError",
    "UnknownFeatureError",
    "UnknownFieldError",
    "UnsupportedMediaTypeError",
    "UnsupportedModelError",
    "UntrustedModelError",
]


class FourfoldError(Exception):
    """Base of every fourfold error; ``status`` is the HTTP status a server answers with."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

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


# -- the request ------------------------------------------------------------------------------------------
class RequestError(FourfoldError):
    """A malformed request, header, option or argument."""

    status = 400


class InvalidOptionError(RequestError):
    """An option value that is not allowed (the message names the option and what it accepts)."""


class UnauthorizedError(FourfoldError):
    status = 401


class NotFoundError(FourfoldError):
    status = 404


class EntityNotFoundError(NotFoundError):
    """An entity the online store knows nothing of, for a feature set that declares it a 404."""


class ConflictError(FourfoldError):
    """What is on disk (a staging directory, a package's runtimes) belongs to something else."""

    status = 409


class PayloadTooLargeError(FourfoldError):
    status = 413


class UnsupportedMediaTypeError(FourfoldError):
    status = 415


class UnavailableError(FourfoldError):
    """Not able to answer now (model not loaded, store down without acceptable defaults): retry later."""

    status = 503


class OverloadedError(UnavailableError):
    """Load shedding: too many requests in flight."""


class DeadlineExceededError(FourfoldError):
    status = 504


# -- the input --------------------------------------------------------------------------------------------
class InputError(FourfoldError):
    """The input does not match the model's signature or its feature set."""

    status = 422

    @classmethod
    def because(cls, feature: str, message: str, **attrs: Any) -> Self:
        """The error with a message of its own (the row check's reason) instead of the one its
        constructor writes; ``feature`` and ``attrs`` are set as attributes."""
        err = cls.__new__(cls)
        InputError.__init__(err, message)
        err.__dict__.update(attrs, feature=feature)
        return err


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


class MissingFieldError(InputError):
    """A field the caller must send is absent; the message lists only what the caller sends."""

    def __init__(self, field: str, expected: list[str], *, where: str = "the request") -> None:
        super().__init__(f"field {field!r} is missing from {where}; send: {', '.join(expected)}")
        self.field = field


class UnknownFieldError(InputError):
    def __init__(self, fields: list[str], expected: list[str], *, where: str = "the request") -> None:
        super().__init__(
            f"unknown field(s) {', '.join(map(repr, fields))} in {where}; "
            f"it takes only: {', '.join(expected)}"
        )
        self.fields = fields


class RowsRejectedError(InputError):
    """Rows of one request that the model cannot score: ``rejected`` holds ``{"row", "reason"}`` of each."""

    def __init__(self, message: str, rejected: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.rejected = rejected


class ComputedFieldError(InputError):
    """A field that fourfold computes itself (a windowed or entity feature) was sent by the caller."""

    def __init__(self, fields: list[str], source: str, *, where: str = "the request") -> None:
        super().__init__(
            f"{where} must not carry {', '.join(map(repr, fields))}: fourfold computes "
            f"{'it' if len(fields) == 1 else 'them'} from {source}"
        )
        self.fields = fields


# -- packages, registries, conversion ---------------------------------------------------------------------
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


class JobFailed(FourfoldError):
    """A batch job ran but must not be committed (too many rejected rows); nothing was written."""

    status = 422


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


class MissingToolError(FourfoldError):
    """A program fourfold runs (a C compiler) is not installed: the message names it and how to get it."""

    status = 501
