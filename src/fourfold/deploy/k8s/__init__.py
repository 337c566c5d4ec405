"""Kubernetes resources as plain dicts, one module per pattern (online, batch, stream) and the pod they
share (``pods``)."""
