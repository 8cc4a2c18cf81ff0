"""The metric interface and registry: every value a cell can report, what it needs and how it is computed.

A metric is a `Metric` registered under its name with `register_metric`. The harness knows no metric by name:
`--metrics` accepts the registered names (`CHOOSABLE`), `Runner.score` computes the chosen ones through
`compute_metrics`, and the tables, plots and ratios read their labels and directions (results_rows.py) and
display style from here. A metric's `compute(data)` gets the cell's CellData (bench/cell_data.py) and returns
a dict of values keyed by metric name; metrics computed by one call (FID's torch-fidelity call also gives KID
and conditional accuracy) share one `compute` function, which runs once per cell, and every non-nan value it
returns lands in the row.

This module imports no metric: each family registers its own on import (bench/metric_builtin.py,
bench/metric_precision_recall.py), and bench/metric_families.py imports them all, so that the import graph
stays acyclic. Read the registry through bench/metric_families.py (it is complete there); a plugin may call
`register_metric` itself.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from solvers.options import SpecError

NEEDS = frozenset({"samples", "features", "reference_solution", "labels"})
SCALES = ("auto", "small", "fraction")


@dataclass(frozen=True)
class Metric:
    """One value a cell can report.

    name: its key in rows, results.csv and `--metrics`. label: its name in tables and plots. lower_is_better:
    its direction (the best value of a table column, ratios). needs: what `compute` reads of the cell, a subset
    of NEEDS ('samples', 'features': the FID feature space, 'reference_solution', 'labels'). compute(data) ->
    {name: value, ...}. min_samples: finite samples below which it is nan without being computed. always:
    every cell has it and --metrics does not choose it (diverged_frac). table: drawn in the run's tables and
    plots when present. scale: how its numbers read: 'auto' (3 significant digits; a log axis when all values
    are positive), 'small' (3 significant digits or scientific; a log axis), 'fraction' (3 decimals; linear).
    """
    name: str
    label: str
    lower_is_better: bool
    needs: frozenset
    compute: Callable[..., dict]
    min_samples: int = 1
    always: bool = False
    table: bool = False
    scale: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "needs", frozenset(self.needs))
        if not self.needs <= NEEDS:
            raise ValueError(f"metric '{self.name}' needs {sorted(self.needs - NEEDS)}; known: {sorted(NEEDS)}")
        if self.scale not in SCALES:
            raise ValueError(f"metric '{self.name}' has scale '{self.scale}'; known: {', '.join(SCALES)}")


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (refused when another metric has its name); returns it."""
    old = METRICS.get(metric.name)
    if old is not None and _where(old.compute) != _where(metric.compute):   # a re-import may re-register
        raise ValueError(f"metric '{metric.name}' is already registered (by {_where(old.compute)})")
    METRICS[metric.name] = metric
    return metric


def _where(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise SpecError(f"unknown metric '{name}'; accepted: {', '.join(CHOOSABLE)}") from None


class _Choosable:
    """The names `--metrics` accepts: the registered metrics that are not always computed (read live)."""

    def __iter__(self):
        return (n for n, m in METRICS.items() if not m.always)

    def __contains__(self, name) -> bool:
        m = METRICS.get(name)
        return m is not None and not m.always

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(tuple(self))


CHOOSABLE = _Choosable()


def needing(names, need: str) -> bool:
    """Whether any of these metrics needs `need` ('features', 'reference_solution', ...)."""
    return any(need in METRICS[n].needs for n in names if n in METRICS)


def tabled_metrics() -> list[str]:
    """The metrics a run's tables and plots show when present, in registry order."""
    return [n for n, m in METRICS.items() if m.table]


# ---- the harness's loop --------------------------------------------------------------------------------------

def compute_metrics(data, wanted) -> dict:
    """The values of the wanted metrics (and of the always-computed ones) of one cell, in registry order; each
    distinct `compute` runs once, and every non-nan value it gives is kept (FID's call also gives KID). A
    metric whose cell has fewer finite samples than its `min_samples` is nan."""
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        get_metric(unknown[0])
    names = [n for n, m in METRICS.items() if m.always or n in wanted]
    out = {n: math.nan for n in names}
    done: list = []
    n_finite = data.n_finite
    for name in names:
        metric = METRICS[name]
        if n_finite < metric.min_samples or any(metric.compute is f for f in done):
            continue
        done.append(metric.compute)
        out.update(metric.compute(data))
    return {k: v for k, v in out.items() if k in names or not (isinstance(v, float) and math.isnan(v))}


@dataclass(frozen=True, eq=False)
class CellResult(Mapping):
    """What `Runner.run_cell` returns: the results row, the samples kept for plots ({'x', 'y'}) and the FID
    features kept for the FID-change table ((sample indices, features) or None). It reads as its row."""
    row: dict
    samples: dict | None = None
    features: tuple | None = None

    def __getitem__(self, key):
        return self.row[key]

    def __iter__(self):
        return iter(self.row)

    def __len__(self):
        return len(self.row)
