"""Data quality from the feature cache alone (``tlx audit``): duplicates, likely label errors,
outliers, undecodable images and the class balance per split."""

from .run import AuditReport, audit

__all__ = ["AuditReport", "audit"]
