"""The online pattern: ``fourfold serve`` - an ASGI app around one predictor (the ``serve`` extra)."""
