"""Every metric family of nfebench, imported so that its metrics are registered: the complete registry.

The harness (spec validation, Runner.score, results_rows, tables, plots) reads the registry from here. A new
family is one file that registers its metrics on import (bench/metric_precision_recall.py is the example)
plus its line below.
"""
from __future__ import annotations

from . import metric_builtin  # noqa: F401  fid, kid, traj_rmse, cond_acc, diverged_frac
from . import metric_precision_recall  # noqa: F401  precision, recall
from .metric import (CHOOSABLE, METRICS, CellResult, Metric, compute_metrics, get_metric,  # noqa: F401
                     needing, register_metric, tabled_metrics)
