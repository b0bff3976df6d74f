"""``tlx audit``: the data set's own mistakes, found from the feature cache alone.

Exact duplicates (content hash), near duplicates (cosine of the features, in blocks), likely
label errors (out-of-fold linear heads and a neighbour vote, then confident learning), outliers
and undecodable images, and the class balance per split. ``audit(features)`` returns an
``AuditReport``; its ``write(folder)`` saves ``audit.json`` and ``audit.png``.
"""

import sys
import types

from .run import AuditReport, audit

__all__ = ["AuditReport", "audit"]


class _CallableModule(types.ModuleType):
    """``tlx.audit(features)`` calls :func:`audit`: the package and the function share the name
    ``tlx.audit``, and once the package is imported Python binds that name to the package."""

    def __call__(self, *args, **kwargs) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
