"""The error tree is whole: every error class fourfold defines is drawn in ``fourfold.errors``' docstring
with its status, each status has a named class, and no call site picks a status by number."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import fourfold
from fourfold import errors
from fourfold.errors import FourfoldError

SRC = Path(fourfold.__file__).parent


def _all_error_classes() -> set[type[FourfoldError]]:
    for info in pkgutil.walk_packages([str(SRC)], prefix="fourfold."):
        if ".demo" in info.name or info.name.endswith((".spark_worker", ".spark_session", ".spark")):
            continue  # imports optional heavy libraries at module level; their errors live elsewhere
        if info.name == "fourfold.stream.flink.functions":
            continue  # PyFlink's classes at module level: only the Flink environment has them
        importlib.import_module(info.name)
    found: set[type[FourfoldError]] = set()
    todo = [FourfoldError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return {c for c in found if c.__module__.startswith("fourfold")}


def test_every_error_class_is_drawn_with_its_status() -> None:
    doc = errors.__doc__ or ""
    drawn = dict(re.findall(r"(\w+Error|JobFailed|FourfoldError)(?: \((\d{3})\))?", doc))
    for cls in _all_error_classes():
        assert cls.__name__ in drawn, f"{cls.__module__}.{cls.__name__} is not drawn in fourfold.errors"
        if drawn[cls.__name__]:
            assert int(drawn[cls.__name__]) == cls.status, cls


def test_each_status_has_its_named_class() -> None:
    for name, status in [("RequestError", 400), ("UnauthorizedError", 401), ("NotFoundError", 404),
                         ("ConflictError", 409), ("PayloadTooLargeError", 413), ("InputError", 422),
                         ("UnavailableError", 503), ("DeadlineExceededError", 504)]:  # fmt: skip
        assert getattr(errors, name).status == status


def test_no_call_site_picks_a_status_by_number() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "status" for k in node.keywords):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name.endswith("Error") and name != "SQLError":  # SQL errors follow the database's code
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {name}(..., status=...)")
    assert offenders == []
