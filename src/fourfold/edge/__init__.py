"""fourfold's edge runtime: load an edge bundle (``fourfold export``) and score rows in-process.

Vendorable: this package imports nothing else of fourfold - only the standard library and NumPy, plus
the format's own runtime when a bundle of that format is loaded (``onnxruntime`` for ONNX, ``ctypes``
for compiled trees, ``ai_edge_litert`` for LiteRT, ``executorch`` for ``.pte``). Every bundle carries a
copy as ``fourfold_edge/``::

    import sys; sys.path.insert(0, "fraud-edge")
    from fourfold_edge import EdgeModel
    EdgeModel("fraud-edge").predict_one({"amount": 310.5, ...})
"""

from .cascade import CascadeModel
from .checks import EdgeInputError, RowCheck
from .model import MANIFEST, BundleError, EdgeModel, read_manifest, verify_files
from .runners import RUNNERS, load_runner

__all__ = [
    "MANIFEST",
    "RUNNERS",
    "BundleError",
    "CascadeModel",
    "EdgeInputError",
    "EdgeModel",
    "RowCheck",
    "load_runner",
    "read_manifest",
    "verify_files",
]
