"""The Dockerfile of one pattern's image: a slim Python base, fourfold with only the extras the pattern
and the model need, a non-root user, and the model baked in (``--model-from image``) or not.

Two stages: the first builds a virtual environment (pip and its caches stay there), the second copies
it. fourfold is installed from ``wheels/`` in the build context when a wheel is there, else from the
package index.

>>> "USER 10001:10001" in dockerfile("online", ("serve",), bake_model=True, openmp=False, port=8000)
True
"""

from __future__ import annotations

from fourfold._version import __version__
from fourfold.deploy.k8s.pods import IMAGE_MODEL, UID
from fourfold.deploy.options import Pattern

__all__ = ["BASE", "PATTERN_EXTRA", "dockerfile", "extras_for"]

BASE = "python:3.11-slim-bookworm"
PATTERN_EXTRA: dict[Pattern, str | None] = {"online": "serve", "batch": None, "stream": "stream"}
_HOME = "/var/lib/fourfold"


def extras_for(
    pattern: Pattern, model_extras: tuple[str, ...], batch_extras: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The pattern's extra, then the model's, then what a batch job's input and output need."""
    first = PATTERN_EXTRA[pattern]
    wanted = (
        ([first] if first else []) + list(model_extras) + (list(batch_extras) if pattern == "batch" else [])
    )
    return tuple(dict.fromkeys(wanted))


def dockerfile(
    pattern: Pattern,
    extras: tuple[str, ...],
    *,
    bake_model: bool,
    openmp: bool,
    port: int | None = None,
    title: str = "",
) -> str:
    """The Dockerfile's text. ``port``: the one the server listens on (online only)."""
    spec = f"fourfold[{','.join(extras)}]=={__version__}" if extras else f"fourfold=={__version__}"
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# fourfold {pattern}{': ' + title if title else ''} - written by `fourfold deploy k8s`.",
        "#   docker build -t IMAGE .      (the image the manifests name)",
        f"FROM {BASE} AS build",
        "# a fourfold wheel in wheels/ is used first; without one, fourfold comes from the package index",
        "COPY wheels/ /wheels/",
        "RUN python -m venv /opt/venv \\",
        f'    && /opt/venv/bin/pip install --no-cache-dir --find-links /wheels "{spec}"',
        "",
        f"FROM {BASE}",
    ]
    if openmp:
        lines += [
            "# the model's library (XGBoost, LightGBM) needs the OpenMP runtime, absent from slim images",
            "# hadolint ignore=DL3008",
            "RUN apt-get update \\",
            "    && apt-get install -y --no-install-recommends libgomp1 \\",
            "    && rm -rf /var/lib/apt/lists/*",
        ]
    lines += [
        f"RUN groupadd --system --gid {UID} fourfold \\",
        f"    && useradd --system --uid {UID} --gid {UID} --home-dir {_HOME} --create-home fourfold",
        "COPY --from=build /opt/venv /opt/venv",
    ]
    if bake_model:
        # owned by root and read-only to the server: the package's sha256s are verified at every load
        lines.append(f"COPY model/ {IMAGE_MODEL}/")
    lines += [
        f"ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 FOURFOLD_HOME={_HOME}",
        f"USER {UID}:{UID}",
        f"WORKDIR {_HOME}",
    ]
    if port is not None:
        lines.append(f"EXPOSE {port}")
    command = "serve" if pattern == "online" else pattern
    # the manifests give the arguments; run alone, the image prints the command's help
    lines += ['ENTRYPOINT ["fourfold"]', f'CMD ["{command}", "--help"]', ""]
    return "\n".join(lines)
