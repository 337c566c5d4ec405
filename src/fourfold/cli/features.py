"""``fourfold features``: compute training features offline, materialize state to an online store, read it.

$ fourfold features compute --features features.yaml --log tx.parquet --out train.parquet
$ fourfold features materialize --features models:/fraud/production --log tx.parquet --store redis://...
$ fourfold features get u000042 --features models:/fraud/production --store redis://...
"""

from __future__ import annotations

import json
import math
import time
from contextlib import closing
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer

from fourfold.errors import NotFoundError, RequestError
from fourfold.features.definitions import FeatureSet, load_features_file

FeaturesOpt = Annotated[
    str, typer.Option("--features", "-f", help="A features.yaml, or a model URI whose package holds one.")
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", help="Online store URL (default: FOURFOLD_STORE or a SQLite file in FOURFOLD_HOME)."
    ),
]


def load_feature_set(ref: str) -> FeatureSet:
    """A feature set from a YAML path, or from the package a model URI names."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        return load_features_file(path)
    from fourfold.registry.resolve import resolve

    fs = resolve(ref).features()
    if fs is None:
        raise NotFoundError(f"the model package {ref} holds no feature set (features.yaml)")
    return fs


def _read_log(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    return pcsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)


def register(app: typer.Typer) -> None:
    features = typer.Typer(help="Compute, materialize and read features.", no_args_is_help=True)
    app.add_typer(features, name="features")

    @features.command("compute")
    def compute(
        feature_set: FeaturesOpt,
        log: Annotated[Path, typer.Option(help="The event log (parquet or CSV), rows in arrival order.")],
        out: Annotated[Path, typer.Option(help="Where to write the features (parquet).")],
    ) -> None:
        """Every event's features as the incremental engine would have had them (training data)."""
        import pyarrow.parquet as pq

        from fourfold.features.offline import compute_features

        fs = load_feature_set(feature_set)
        t0 = time.perf_counter()
        table = _read_log(log)
        result = compute_features(table, fs, on_error="reject")
        tmp = out.with_suffix(out.suffix + ".tmp")
        pq.write_table(result, tmp)
        tmp.replace(out)  # never a half-written output
        late = int(result["_late"].to_numpy(zero_copy_only=False).sum())
        rejected = result.num_rows - result["_rejected"].null_count
        typer.echo(
            f"{result.num_rows:,} events -> {out} in {time.perf_counter() - t0:.1f}s "
            f"({late:,} late, {rejected:,} rejected)"
        )

    @features.command("materialize")
    def materialize(
        feature_set: FeaturesOpt,
        log: Annotated[Path, typer.Option(help="The event log to replay (parquet or CSV).")],
        store: StoreOpt = None,
        entities: Annotated[
            Path | None, typer.Option(help="A parquet of precomputed entity features to write too.")
        ] = None,
    ) -> None:
        """Write every entity's state (and entity features) to the online store."""
        from fourfold.features.online import OnlineFeatures
        from fourfold.features.stores import open_store
        from fourfold.settings import Settings

        fs = load_feature_set(feature_set)
        url = store or Settings().store_url
        with closing(open_store(url)) as st:
            online = OnlineFeatures(fs, st)
            report = online.materialize(_read_log(log))
            typer.echo(
                f"{report.entities:,} entities from {report.events:,} events -> {url} "
                f"({report.late:,} late, {report.rejected:,} rejected, {len(report.stale):,} stale)"
            )
            if entities is not None:
                import pyarrow.parquet as pq

                stale = online.write_entity_features(pq.read_table(entities))
                typer.echo(f"entity features written ({len(stale):,} stale)")

    @features.command("get")
    def get(
        entity: Annotated[list[str], typer.Argument(help="Entity id(s), e.g. u000042.")],
        feature_set: FeaturesOpt,
        store: StoreOpt = None,
        at: Annotated[
            str | None, typer.Option(help="As of this time: ISO 8601 or ms since the epoch (default: now).")
        ] = None,
    ) -> None:
        """The features of entities as of now (or --at), from the online store, as JSON lines."""
        from fourfold.features.online import OnlineFeatures
        from fourfold.features.stores import open_store
        from fourfold.settings import Settings

        fs = load_feature_set(feature_set)
        with closing(open_store(store or Settings().store_url)) as st:
            rows = OnlineFeatures(fs, st).get(entity, at_ms=_parse_time(at))
        for key, row in zip(entity, rows, strict=True):
            clean = None if row is None else {k: (None if math.isnan(v) else v) for k, v in row.items()}
            typer.echo(json.dumps({"entity": key, "features": clean}))


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(
            f"--at {text!r}: use ISO 8601 (2025-04-15T10:00:00Z) or ms since the epoch",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
