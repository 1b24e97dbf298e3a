"""Evaluation: metrics, pictures, the run folder and its self-contained HTML report.

>>> from transferkit.evaluation import evaluate, save_run, plot_history
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "Evaluation": "metrics", "evaluate": "metrics", "roc_auc": "metrics",
    **{name: "plots" for name in ("plot_history", "plot_confusion_matrix", "plot_reliability", "plot_top_losses",
                                  "plot_gallery", "plot_predictions", "gradcam", "plot_gradcam", "plot_tuning",
                                  "plot_lr_find")},
    "write_report": "report", "REPORT_FILE": "report",
    "RunFolder": "run", "save_run": "run", "save_search": "run", "summary": "run", "RUN_FILES": "run",
})
