"""The ``tlx`` command line: one small module per command group, joined in ``app.py``."""
