"""Data quality from the feature cache alone (``tlx audit``): exact and near duplicates,
likely label errors (out-of-fold linear heads and a neighbour vote, then confident learning),
outliers and undecodable images, and the class balance per split. ``audit(features)`` (also
``tlx.audit``) returns an ``AuditReport``; its ``write(folder)`` saves ``audit.json`` and ``audit.png``.
"""

from .run import AuditReport, audit

__all__ = ["AuditReport", "audit"]
