"""What a results row means to every table, ratio and plot: metric names and directions (read from the metric
registry, bench/metric.py), the budget rule, titles, LaTeX escaping. The modules that draw tables (tables,
ratios, nfe_changes, plots) import it; it imports none of them."""
from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter

import pandas as pd

from .metric_families import METRICS


class _RegistryView(Mapping):
    """metric name -> one attribute of its registered Metric, read live (a metric registered later is in)."""

    def __init__(self, attr: str):
        self._get = attrgetter(attr)

    def __getitem__(self, name):
        return self._get(METRICS[name])

    def __iter__(self):
        return iter(METRICS)

    def __len__(self):
        return len(METRICS)

    def __repr__(self):
        return repr(dict(self))


LOWER_IS_BETTER = _RegistryView("lower_is_better")   # {'fid': True, ..., 'cond_acc': False, ...}
METRIC_NAMES = _RegistryView("label")                # {'fid': 'FID', 'traj_rmse': 'trajectory RMSE', ...}


def over_budget(df: pd.DataFrame) -> pd.Series:
    """Rows whose cell spent more NFE than its column's budget (an adaptive solver): never ranked in a fixed-NFE
    table, a ratio, an NFE change or a plot line."""
    return df["nfe_used"].notna() & (df["nfe_used"] > df["nfe"])


def within_budget(df: pd.DataFrame) -> pd.DataFrame:
    return df[~over_budget(df)] if "nfe_used" in df.columns else df


def title(model, guidance, metric):
    g = f", guidance {guidance:g}" if guidance != 1 else ", no guidance"
    return f"{METRIC_NAMES.get(metric, metric)} vs NFE — {model}{g}"


def tex_escape(s: str) -> str:
    return s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&") \
        .replace("#", "\\#")
