"""The version of tlx, in a module of its own so that any layer can read it without importing the
package face (``tlx/__init__.py``), which sits above every stage."""

__version__ = "0.1.0"
