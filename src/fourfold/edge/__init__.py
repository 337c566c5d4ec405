"""fourfold.edge: the vendorable edge runtime (see runners.py)."""
