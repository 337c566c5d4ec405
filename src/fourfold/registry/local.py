"""The local registry: named models, auto-incremented versions and aliases under ``FOURFOLD_HOME``.

::

    $FOURFOLD_HOME/registry/fraud/
      1/ 2/ 3/          immutable package copies (one directory per version)
      aliases.json      {"production": 3, "staging": 2}
      .lock             taken while a version number or an alias is chosen

A version directory appears by one ``rename`` of a fully written, verified copy, so a crash mid-register
leaves no broken version; the lock makes two processes registering at once get distinct versions.

    >>> # reg = LocalRegistry(); v = reg.register("./fraud-pkg", name="fraud", aliases=["production"])
    >>> # reg.resolve("models:/fraud/production").version
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from fourfold.errors import ModelNotFoundError, PackageError
from fourfold.model.package import ModelPackage, load_package
from fourfold.registry.names import validate_alias, validate_name
from fourfold.registry.uri import ModelURI, parse_uri
from fourfold.settings import Settings

__all__ = ["LocalRegistry", "ModelVersion"]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class LocalRegistry:
    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(home if home is not None else Settings().home) / "registry"

    def _dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _lock(self, name: str) -> FileLock:
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / ".lock"), timeout=60)

    # -- reading ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[int]:
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())

    def aliases(self, name: str) -> dict[str, int]:
        path = self._dir(name) / "aliases.json"
        if not path.is_file():
            return {}
        data: dict[str, int] = json.loads(path.read_text())
        return data

    def get(self, name: str, version: int) -> ModelVersion:
        path = self._dir(name) / str(version)
        if not path.is_dir():
            known = ", ".join(str(v) for v in self.versions(name)) or "none"
            raise ModelNotFoundError(f"model {name!r} has no version {version} (versions: {known})")
        aliases = tuple(sorted(a for a, v in self.aliases(name).items() if v == version))
        return ModelVersion(name, version, path, aliases)

    def lookup(self, uri: ModelURI | str) -> ModelVersion:
        """The registered version a ``models:/`` URI names."""
        ref = parse_uri(uri) if isinstance(uri, str) else uri
        if ref.name is None:
            raise ModelNotFoundError(f"{ref} is a path, not a registry URI")
        if not self.versions(ref.name):
            known = ", ".join(self.names()) or "none registered"
            raise ModelNotFoundError(f"no model named {ref.name!r} in {self.root} (models: {known})")
        if ref.version is not None:
            return self.get(ref.name, ref.version)
        if ref.alias is not None:
            aliases = self.aliases(ref.name)
            if ref.alias not in aliases:
                known = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
                raise ModelNotFoundError(f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {known})")
            return self.get(ref.name, aliases[ref.alias])
        return self.get(ref.name, self.versions(ref.name)[-1])

    def resolve(self, uri: ModelURI | str, *, verify: bool = True) -> ModelPackage:
        mv = self.lookup(uri)
        return load_package(mv.path, verify=verify).with_version(str(mv.version), mv.uri)

    # -- writing ---------------------------------------------------------------------------------------
    def register(
        self, package: str | os.PathLike[str] | ModelPackage, *, name: str, aliases: Iterable[str] = ()
    ) -> ModelVersion:
        """Copy a package in as the next version of ``name``, and point ``aliases`` at it."""
        validate_name(name)
        aliases = [validate_alias(a) for a in aliases]
        src = package.path if isinstance(package, ModelPackage) else Path(package)
        pkg = load_package(src)  # refuse a tampered or broken package before it gets a version
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=d))
        try:
            copy = staging / "pkg"
            shutil.copytree(pkg.path, copy)
            self._rename_in_copy(copy, pkg, name)
            load_package(copy)
            with self._lock(name):
                version = (self.versions(name) or [0])[-1] + 1
                os.rename(copy, d / str(version))
                if aliases:
                    self._write_aliases(name, self.aliases(name) | dict.fromkeys(aliases, version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name, version)

    @staticmethod
    def _rename_in_copy(copy: Path, pkg: ModelPackage, name: str) -> None:
        if pkg.name == name:
            return
        from fourfold.model.package import write_manifest

        write_manifest(copy, pkg.manifest | {"name": name})

    def set_alias(self, name: str, version: int, alias: str) -> ModelVersion:
        validate_alias(alias)
        self.get(name, version)
        with self._lock(name):
            self._write_aliases(name, self.aliases(name) | {alias: version})
        return self.get(name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._lock(name):
            aliases = self.aliases(name)
            if aliases.pop(alias, None) is None:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            self._write_aliases(name, aliases)

    def _write_aliases(self, name: str, aliases: dict[str, int]) -> None:
        path = self._dir(name) / "aliases.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(aliases.items()))))
        os.replace(tmp, path)

    def describe(self, name: str) -> list[dict[str, Any]]:
        rows = []
        for v in self.versions(name):
            mv = self.get(name, v)
            try:
                pkg = load_package(mv.path, verify=False)
            except PackageError:
                continue
            rows.append(
                {
                    "name": name,
                    "version": v,
                    "aliases": list(mv.aliases),
                    "flavor": pkg.flavor,
                    "task": pkg.signature.task,
                    "runtimes": ["native", *pkg.runtimes],
                    "created_at": pkg.manifest.get("created_at"),
                }
            )
        return rows
