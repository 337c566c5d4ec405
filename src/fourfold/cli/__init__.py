"""The ``fourfold`` command line: one module per command group."""
