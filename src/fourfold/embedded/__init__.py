"""The embedded pattern: edge bundles (export + gate), compiled targets, the Embedded + Online cascade."""
