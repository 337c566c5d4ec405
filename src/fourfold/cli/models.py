"""``fourfold models``: list, show, register, alias and pull models in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fourfold.registry import LocalRegistry, registry_kind, resolve


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="List, show, register, alias and pull models.", no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Every registered model version with its aliases."""
        if registry_kind() == "mlflow":
            from fourfold.registry.mlflow import list_mlflow

            rows, where = list_mlflow(), "MLflow's registry"
            for r in rows:
                r |= {"flavor": "mlflow", "task": "-", "runtimes": [f"stage:{r['stage']}"]}
        else:
            reg = LocalRegistry()
            rows, where = [row for name in reg.names() for row in reg.describe(name)], str(reg.root)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo(f"no models registered in {where}")
            return
        typer.echo(f"{'NAME':<20} {'VERSION':>7}  {'FLAVOR':<9} {'TASK':<11} {'RUNTIMES':<13} ALIASES")
        for r in rows:
            typer.echo(
                f"{r['name']:<20} {r['version']:>7}  {r['flavor']:<9} {r['task']:<11} "
                f"{','.join(r['runtimes']):<13} {','.join(r['aliases'])}"
            )

    @models.command("show")
    def show(uri: Annotated[str, typer.Argument(help="A path or models:/NAME/VERSION|ALIAS.")]) -> None:
        """The manifest of a model package (files verified)."""
        pkg = resolve(uri)
        out = {"uri": pkg.uri, "version": pkg.version, "path": str(pkg.path), **pkg.manifest}
        typer.echo(json.dumps(out, indent=2, default=str))

    @models.command("pull")
    def pull(
        uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION|ALIAS (local registry or MLflow).")],
        to: Annotated[Path, typer.Option("--to", help="The directory the package is copied to.")],
    ) -> None:
        """Copy a model's package (files verified) to a directory: what an init container runs to give
        a pod its model. A directory holding the same package already is left as it is."""
        from fourfold.registry.pull import pull_package

        copied = pull_package(uri, to)
        typer.echo(f"{uri} -> {to}" + ("" if copied else " (already there)"))

    @models.command("register")
    def register_(
        path: Annotated[Path, typer.Argument(help="A model package directory.")],
        name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
        alias: Annotated[
            list[str] | None, typer.Option("--alias", "-a", help="Alias to point at it.")
        ] = None,
    ) -> None:
        """Copy a package into the registry as the next version of NAME."""
        mv = LocalRegistry().register(path, name=name, aliases=alias or [])
        typer.echo(f"registered {mv.uri}" + (f" (aliases: {', '.join(mv.aliases)})" if mv.aliases else ""))

    @models.command("alias")
    def alias_(
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version number.")],
        alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    ) -> None:
        """Point ALIAS of NAME at VERSION."""
        LocalRegistry().set_alias(name, version, alias)
        typer.echo(f"models:/{name}/{alias} -> version {version}")
