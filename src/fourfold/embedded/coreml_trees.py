"""A Core ML tree-ensemble spec evaluated in NumPy: what the model file says, checkable on Linux.

Core ML cannot predict off macOS, but a tree ensemble is data: nodes (tree, node, behaviour, feature,
threshold, children, where a missing value goes), leaf contributions per output dimension, a base
prediction and a post-evaluation transform. :func:`evaluate` computes the ensemble's output from those
fields as ``TreeEnsemble.proto`` defines them, so a converted file can be held to the native model.

    >>> # probabilities = evaluate(spec, x)   # spec: coremltools.proto.Model_pb2.Model
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ensemble_of", "evaluate", "splits"]

_COMPARE = {
    "BranchOnValueLessThanEqual": np.less_equal,
    "BranchOnValueLessThan": np.less,
    "BranchOnValueGreaterThanEqual": np.greater_equal,
    "BranchOnValueGreaterThan": np.greater,
    "BranchOnValueEqual": np.equal,
    "BranchOnValueNotEqual": np.not_equal,
}


def ensemble_of(spec: Any) -> tuple[Any, Any, str]:
    """``(ensemble parameters, the classifier / regressor message, its kind)`` of a tree-ensemble spec."""
    kind = spec.WhichOneof("Type")
    if kind not in ("treeEnsembleClassifier", "treeEnsembleRegressor"):
        raise ValueError(f"not a tree-ensemble spec: {kind}")
    model = getattr(spec, kind)
    return model.treeEnsemble, model, kind


def splits(spec: Any) -> list[tuple[int, float]]:
    """``(feature index, threshold)`` of every branch node."""
    ensemble, _, _ = ensemble_of(spec)
    return [
        (int(n.branchFeatureIndex), float(n.branchFeatureValue))
        for n in ensemble.nodes
        if n.nodeBehavior != _behaviour(ensemble, "LeafNode")
    ]


def _behaviour(ensemble: Any, name: str) -> int:
    return int(type(ensemble.nodes[0]).TreeNodeBehavior.Value(name))


def evaluate(spec: Any, x: np.ndarray) -> np.ndarray:
    """The spec's output for rows ``x``: ``[rows, dimensions]`` after the post-evaluation transform."""
    ensemble, model, _ = ensemble_of(spec)
    x = np.asarray(x, dtype=np.float64)
    dims = int(ensemble.numPredictionDimensions)
    out = np.zeros((len(x), dims), dtype=np.float64) + np.asarray(
        ensemble.basePredictionValue, dtype=np.float64
    )
    behaviour = type(ensemble.nodes[0]).TreeNodeBehavior
    by_tree: dict[int, dict[int, Any]] = {}
    for node in ensemble.nodes:
        by_tree.setdefault(int(node.treeId), {})[int(node.nodeId)] = node
    for nodes in by_tree.values():
        out += _tree(nodes, behaviour, x, dims)
    field = model.DESCRIPTOR.fields_by_name["postEvaluationTransform"]
    transform = field.enum_type.values_by_number[model.postEvaluationTransform].name
    return _transform(transform, out)


def _tree(nodes: dict[int, Any], behaviour: Any, x: np.ndarray, dims: int) -> np.ndarray:
    """One tree, every row stepped down together: ``[rows, dims]`` leaf contributions."""
    order = sorted(nodes)
    pos = {node_id: i for i, node_id in enumerate(order)}
    spec = [nodes[i] for i in order]
    leaf_code = behaviour.Value("LeafNode")
    leaf = np.array([n.nodeBehavior == leaf_code for n in spec])
    op = np.array([n.nodeBehavior for n in spec])
    feature = np.array([n.branchFeatureIndex for n in spec], dtype=np.int64)
    threshold = np.array([n.branchFeatureValue for n in spec], dtype=np.float64)
    to_true = np.array([pos.get(n.trueChildNodeId, 0) for n in spec], dtype=np.int64)
    to_false = np.array([pos.get(n.falseChildNodeId, 0) for n in spec], dtype=np.int64)
    missing_true = np.array([n.missingValueTracksTrueChild for n in spec], dtype=bool)
    values = np.zeros((len(spec), dims), dtype=np.float64)
    for i, n in enumerate(spec):
        for info in n.evaluationInfo:
            values[i, int(info.evaluationIndex)] += float(info.evaluationValue)
    children = {
        c for n in spec if n.nodeBehavior != leaf_code for c in (n.trueChildNodeId, n.falseChildNodeId)
    }
    roots = [pos[i] for i in order if i not in children]
    at = np.full(len(x), roots[0] if roots else 0, dtype=np.int64)
    for _ in range(len(spec)):
        rows = np.flatnonzero(~leaf[at])
        if len(rows) == 0:
            break
        here = at[rows]
        value = x[rows, feature[here]]
        go_true = np.zeros(len(rows), dtype=bool)
        for name, compare in _COMPARE.items():
            mask = op[here] == behaviour.Value(name)
            go_true[mask] = compare(value[mask], threshold[here][mask])
        go_true = np.where(np.isnan(value), missing_true[here], go_true)
        at[rows] = np.where(go_true, to_true[here], to_false[here])
    return values[at]


def _transform(name: str, margin: np.ndarray) -> np.ndarray:
    if name == "NoTransform":
        return margin
    if name == "Regression_Logistic":
        return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=np.float64)
    if name == "Classification_SoftMax":
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)
    if name == "Classification_SoftMaxWithZeroClassReference":
        full = np.concatenate([np.zeros((len(margin), 1)), margin], axis=1)
        return _transform("Classification_SoftMax", full)
    raise ValueError(f"unknown post-evaluation transform {name}")
