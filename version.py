"""The version of tlx, in a module of its own: any layer reads it without importing the package face."""

__version__ = "0.1.0"
