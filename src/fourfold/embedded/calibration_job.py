"""The calibration run: read the labelled rows, score them with the edge bundle and with the model the
server serves (through the server's own predictor), then
:func:`~fourfold.embedded.calibrate.calibrate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fourfold.edge import EdgeModel
from fourfold.embedded.calibrate import Calibration, calibrate, draw
from fourfold.errors import InputError, InvalidOptionError
from fourfold.model.predictor import Predictor
from fourfold.registry import resolve

__all__ = ["run_calibration"]


def run_calibration(
    bundle: Path,
    data: Path,
    *,
    label: str,
    server_model: str | None,
    target_share: float,
    max_loss: float,
    plot_to: Path | None = None,
) -> Calibration:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not 0 <= target_share <= 1:
        raise InvalidOptionError(f"--target-share must be in [0, 1], got {target_share}")
    if max_loss < 0:
        raise InvalidOptionError(f"--max-loss must be >= 0, got {max_loss}")
    edge = EdgeModel(bundle)
    if edge.task != "binary":
        raise InvalidOptionError(f"the cascade needs a binary classifier; {bundle} holds a {edge.task} model")
    uri = server_model or edge.manifest.get("uri")
    if not uri:
        raise InvalidOptionError(
            "the bundle does not say which registered model it came from: give --server-model"
        )
    if not data.exists():
        raise InvalidOptionError(f"--data {data} does not exist")
    table: pa.Table = pq.read_table(data) if data.suffix == ".parquet" else pcsv.read_csv(data)
    if label not in table.column_names:
        raise InputError(f"--data has no label column {label!r}; it has: {', '.join(table.column_names)}")
    truth = np.asarray(table.column(label).to_numpy(zero_copy_only=False))
    if not np.isin(truth, (0, 1)).all():
        raise InputError(f"the label column {label!r} must hold 0 or 1")
    missing = [f for f in edge.feature_order if f not in table.column_names]
    if missing:
        raise InputError(f"--data lacks the edge model's feature(s) {', '.join(map(repr, missing))}")
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in edge.feature_order])
    local = edge.predict(x.astype(np.float64))["score"]
    server = Predictor(resolve(str(uri)))
    features = table.select(list(server.signature.feature_names))
    server_labels = server.predict(features)["label"]
    cal = calibrate(local, server_labels, truth.astype(np.int64), threshold=edge.threshold,
                    target_share=target_share, max_loss=max_loss)  # fmt: skip
    if plot_to is not None:
        draw(cal, plot_to)
    return cal
