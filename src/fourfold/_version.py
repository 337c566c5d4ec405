"""The package version (its own module: the core reads it without importing the package root)."""

__version__ = "0.1.0"
