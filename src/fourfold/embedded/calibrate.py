"""``fourfold cascade calibrate``: the cascade's ``low`` / ``high`` from a labelled sample.

The edge model scores every row; the server's answer is the online model's (the package the server
serves, scored through the same predictor); a band ``[low, high]`` sends the rows scored inside it to
the server and answers the rest locally. For each band: the share of server calls and the accuracy lost
against asking the server for every row. The pick: among the bands whose share is at most the target,
the one that loses the least accuracy (then the smaller share); it must lose at most ``max_loss``, else
the calibration fails and says which share the bound needs.

Bands are searched over quantiles of the edge scores (prefix sums over the rows sorted by score: every
band is O(1)), so the thresholds are scores the sample holds and carry over to data like it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SHARES", "Band", "Calibration", "calibrate", "draw"]

SHARES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    share: float  # of rows sent to the server
    accuracy: float  # of the cascade's labels
    loss: float  # accuracy(server for every row) - accuracy(cascade)

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Calibration:
    pick: Band
    ok: bool
    target_share: float
    max_loss: float
    server_accuracy: float
    local_accuracy: float
    table: tuple[Band, ...]  # the best band at each share in SHARES
    frontier: tuple[Band, ...]  # the least loss at every share the search reached (for the plot)
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pick": self.pick.to_dict(),
            "target_share": self.target_share,
            "max_loss": self.max_loss,
            "server_accuracy": self.server_accuracy,
            "local_accuracy": self.local_accuracy,
            "table": [b.to_dict() for b in self.table],
            "message": self.message,
        }


def calibrate(
    local_scores: np.ndarray,
    server_labels: np.ndarray,
    truth: np.ndarray,
    *,
    threshold: float,
    target_share: float,
    max_loss: float,
    grid: int = 200,
) -> Calibration:
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target share must be in [0, 1], got {target_share}")
    if max_loss < 0:
        raise ValueError(f"max loss must be >= 0, got {max_loss}")
    s = np.asarray(local_scores, dtype=np.float64)
    n = len(s)
    if n == 0 or len(server_labels) != n or len(truth) != n:
        raise ValueError("calibration needs as many server labels and true labels as scored rows (> 0)")
    order = np.argsort(s, kind="stable")
    s = s[order]
    truth = np.asarray(truth)[order]
    local_ok = ((s > threshold).astype(np.int64) == truth).astype(np.int64)
    server_ok = (np.asarray(server_labels)[order] == truth).astype(np.int64)
    cl = np.concatenate([[0], np.cumsum(local_ok)])
    cs = np.concatenate([[0], np.cumsum(server_ok)])
    server_acc = cs[-1] / n
    # candidate cut positions: rows [i, j) go to the server; cuts at score quantiles (ties kept together)
    cuts = np.unique(np.searchsorted(s, np.quantile(s, np.linspace(0, 1, grid + 1)), side="left"))
    cuts = np.unique(np.concatenate([cuts, [0, n]]))
    i, j = np.meshgrid(cuts, cuts, indexing="ij")
    keep = j >= i
    i, j = i[keep], j[keep]
    share = (j - i) / n
    acc = (cl[-1] - (cl[j] - cl[i]) + (cs[j] - cs[i])) / n
    loss = server_acc - acc

    def band(k: int) -> Band:
        if j[k] == i[k]:  # an empty band: every row local (only an exact score of 0 would be sent)
            return Band(0.0, 0.0, float(share[k]), float(acc[k]), float(loss[k]))
        return Band(float(s[i[k]]), float(s[j[k] - 1]), float(share[k]), float(acc[k]), float(loss[k]))

    def best(limit: float) -> int:
        ok = np.flatnonzero(share <= limit + 1e-12)
        return int(ok[np.lexsort((share[ok], loss[ok]))[0]])

    table = tuple(band(best(t)) for t in SHARES)
    levels = np.unique(share)
    frontier = tuple(band(best(float(t))) for t in levels[:: max(1, len(levels) // 100)])
    pick = band(best(target_share))
    ok = pick.loss <= max_loss + 1e-12
    if ok:
        message = (
            f"low={pick.low:.6g} high={pick.high:.6g}: {pick.share:.1%} of rows to the server, "
            f"accuracy {pick.accuracy:.4f} ({pick.loss:+.4f} against the server for every row)"
        )
    else:
        meets = np.flatnonzero(loss <= max_loss + 1e-12)
        need = float(share[meets].min()) if len(meets) else 1.0
        message = (
            f"at a target share of {target_share:.1%} the cascade loses {pick.loss:.4f} accuracy, more than "
            f"the bound {max_loss}; the bound needs {need:.1%} of rows sent to the server"
        )
    local_acc = cl[-1] / n
    return Calibration(
        pick, ok, target_share, max_loss, float(server_acc), float(local_acc), table, frontier, message
    )


def draw(cal: Calibration, path: str | os.PathLike[str]) -> None:
    """The trade-off as a PNG: accuracy lost against the share of rows sent to the server."""
    from fourfold.extras import require

    matplotlib = require("matplotlib", "plot", "the calibration plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([b.share for b in cal.frontier], [b.loss for b in cal.frontier], marker=".", lw=1)
    ax.axhline(cal.max_loss, color="grey", ls="--", lw=1, label=f"bound {cal.max_loss}")
    ax.axvline(cal.target_share, color="tab:orange", ls=":", lw=1, label=f"target {cal.target_share:.0%}")
    ax.scatter([cal.pick.share], [cal.pick.loss], color="tab:red", zorder=3, label="pick")
    ax.set_xlabel("share of rows sent to the server")
    ax.set_ylabel("accuracy lost vs. server for every row")
    ax.set_title("Embedded + Online cascade")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
