"""The edge runtime a bundle carries runs in a fresh virtualenv holding only NumPy and ONNX Runtime.

The virtualenv is made with ``venv`` (no fourfold, no pyarrow, no scikit-learn) and given exactly the
``numpy`` and ``onnxruntime`` distributions and their own requirements, linked file by file from this
environment (the same wheels pip installed here, without a download)."""

from __future__ import annotations

import json
import re
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import numpy as np

from conftest import FEATURES, build
from fourfold import Predictor, save_model
from fourfold.embedded.export import export_bundle


def _closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[ ;<>=!\[]", todo.pop())[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _fresh_env(root: Path, dists: set[str]) -> Path:
    venv.create(root, with_pip=False)
    py = root / "bin" / "python"
    site = Path(
        subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    for name in dists:
        dist = metadata.distribution(name)
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f))).resolve()
            if not src.is_file() or ".." in f.parts:
                continue
            dst = site / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src)
    return py


def test_the_bundles_runtime_scores_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    model, x, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="m", sample=table)
    export_bundle(pkg.path, "onnx", tmp_path / "bundle")
    dists = _closure(["numpy", "onnxruntime"])
    assert "pyarrow" not in dists
    assert "fourfold" not in dists
    assert "scikit-learn" not in dists
    py = _fresh_env(tmp_path / "venv", dists)
    rows = [{name: float(x[i, j]) for j, name in enumerate(FEATURES)} for i in range(20)]
    script = f"""
import json, sys
sys.path.insert(0, {str(tmp_path / "bundle")!r})
for banned in ("fourfold", "pyarrow", "sklearn", "xgboost"):
    try:
        __import__(banned)
    except ImportError:
        pass
    else:
        raise SystemExit(banned + " is importable: the environment is not fresh")
from fourfold_edge import EdgeModel, EdgeInputError
m = EdgeModel({str(tmp_path / "bundle")!r})
rows = json.loads(sys.stdin.read())
out = [m.predict_one(r)["score"] for r in rows]
try:
    m.predict_one({{**rows[0], "x1": "high"}})
except EdgeInputError as err:
    msg = str(err)
print(json.dumps({{"scores": out, "error": msg, "modules": sorted(k for k in sys.modules if "." not in k)}}))
"""
    done = subprocess.run(
        [py, "-c", script], input=json.dumps(rows), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = Predictor(pkg).predict(table)["score"][:20]
    np.testing.assert_allclose(got["scores"], want, atol=1e-5)
    assert got["error"] == "feature 'x1' must be a number, got str 'high'"
    assert not {"fourfold", "pyarrow", "sklearn"} & set(got["modules"])
