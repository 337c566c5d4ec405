"""README.md's "Using it" snippet runs exactly as written (in a fresh FOURFOLD_HOME, from an empty cwd)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import fourfold

README = Path(__file__).resolve().parents[1] / "README.md"


def first_python_block(text: str) -> tuple[str, int]:
    """The first ```python block of ``text`` and the line number of its first line."""
    match = re.search(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no ```python block"
    return match.group(1), text.count("\n", 0, match.start(1)) + 1


def run_snippet(source: str, first_line: int = 1) -> tuple[dict[str, Any], list[Any]]:
    """Execute ``source`` statement by statement; returns its namespace and the values of its bare
    expressions (what an interactive session would show). Errors point at README lines."""
    tree = ast.parse(source)
    ast.increment_lineno(tree, first_line - 1)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    shown: list[Any] = []
    for node in tree.body:
        if isinstance(node, ast.Expr):
            shown.append(eval(compile(ast.Expression(node.value), str(README), "eval"), namespace))
        else:
            exec(compile(ast.Module([node], type_ignores=[]), str(README), "exec"), namespace)
    return namespace, shown


def test_using_it_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Stands in for the demo's model: the snippet must leave models:/fraud/production where it was.
    sample = {"a": np.array([0.0, 1.0]), "b": np.array([1.0, 0.0])}
    model = LogisticRegression().fit(np.eye(2), [0, 1])
    demo = fourfold.save_model(model, tmp_path / "fraud", name="fraud", sample=sample)
    fourfold.LocalRegistry().register(demo, name="fraud", aliases=["production"])

    source, line = first_python_block(README.read_text())
    namespace, shown = run_snippet(source, line)

    predictor = namespace["p"]
    assert isinstance(predictor, fourfold.Predictor)
    assert predictor.runtime == "onnx"  # compiled, parity passed
    [name] = [n for n in fourfold.LocalRegistry().names() if n != "fraud"]
    assert name != "fraud"
    assert "production" not in fourfold.LocalRegistry().aliases(name)
    assert fourfold.LocalRegistry().lookup("models:/fraud/production").version == 1
    assert fourfold.LocalRegistry().versions("fraud") == [1]

    batch, one = shown[-2:]
    assert len(batch) > 1
    assert np.all((np.asarray(batch) >= 0) & (np.asarray(batch) <= 1))
    assert set(one) >= {"score", "label"}
    assert 0.0 <= one["score"] <= 1.0


def test_run_snippet_fails_on_an_undefined_name() -> None:
    with pytest.raises(NameError, match="arrow_table"):
        run_snippet("import fourfold\nfourfold.__name__\narrow_table\n")
