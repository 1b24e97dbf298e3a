"""Audit: suspected label errors, near-duplicates across splits, and outliers, before training.

>>> from transferkit.audit import audit, AuditReport
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    name: "checks" for name in ("audit", "AuditReport", "near_duplicates", "out_of_fold_probabilities",
                                "label_issues", "outlier_scores", "read_exclusions")
})
