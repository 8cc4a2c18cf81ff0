"""FID-vs-NFE tables: rows solvers, columns NFE, one table per model and guidance; best per column marked.

With several seeds a cell shows the mean across seeds and the half-width of its 95% interval
(Student t over seeds)."""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from .metric_families import METRICS, tabled_metrics
from .results_rows import LOWER_IS_BETTER, METRIC_NAMES, tex_escape, over_budget, title, within_budget  # noqa: F401

HEADLINE = "fid"   # every run's first table (fid_vs_nfe.md/.tex are named after it), present or not

def summarize(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, 95% half-width and seed count per (model, guidance, solver, nfe)."""
    keys = ["model", "guidance", "solver", "nfe"]

    def agg(v):
        v = v.dropna()
        n = len(v)
        mean = v.mean() if n else math.nan
        hw = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        return pd.Series({"mean": mean, "ci95": hw, "n_seeds": n})

    out = df.groupby(keys, sort=False)[metric].apply(agg).unstack()
    div = df.groupby(keys, sort=False)["diverged_frac"].mean()
    out["diverged_frac"] = div
    return out.reset_index()


def pivot_tables(df: pd.DataFrame, metric: str):
    """Yield ((model, guidance), mean pivot, ci pivot, diverged pivot) in a stable order."""
    if metric not in df.columns:
        raise ValueError(f"metric '{metric}' not in results; available: {', '.join(LOWER_IS_BETTER)}")
    s = summarize(df, metric)
    solver_order = list(dict.fromkeys(df["solver"]))
    for (model, g), part in s.groupby(["model", "guidance"], sort=True):
        mean = part.pivot(index="solver", columns="nfe", values="mean")
        ci = part.pivot(index="solver", columns="nfe", values="ci95")
        div = part.pivot(index="solver", columns="nfe", values="diverged_frac")
        order = [x for x in solver_order if x in mean.index]
        yield (model, g), mean.loc[order], ci.loc[order], div.loc[order]


def _best(mean: pd.DataFrame, metric: str) -> pd.DataFrame:
    lower = LOWER_IS_BETTER.get(metric, True)
    best = mean.min() if lower else mean.max()
    return mean.eq(best, axis=1) & mean.notna()


def _fmt(v, metric):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    scale = METRICS[metric].scale if metric in METRICS else "auto"   # the metric's registered style
    if scale == "small":
        return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"
    if scale == "fraction":
        return f"{v:.3f}"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _cell_text(m, c, d, metric, pm="±"):
    if isinstance(m, float) and math.isnan(m):
        return "–" if not (d and d > 0) else "div"
    text = _fmt(m, metric)
    if isinstance(c, float) and not math.isnan(c):
        text += f" {pm} {_fmt(c, metric)}"
    if d and d > 0:
        text += f" ({d:.0%} div)" if pm == "±" else f" ({d * 100:.0f}\\% div)"
    return text


def to_markdown(df: pd.DataFrame, metric: str = "fid") -> str:
    parts = []
    seeds = df["seed"].nunique()
    over = df[over_budget(df)] if "nfe_used" in df.columns else df.iloc[:0]
    for (model, g), mean, ci, div in pivot_tables(within_budget(df), metric):
        best = _best(mean, metric)
        cols = list(mean.columns)
        lines = [f"### {title(model, g, metric)}", ""]
        note = "lower is better" if LOWER_IS_BETTER.get(metric, True) else "higher is better"
        extra = f"; mean ± 95% interval over {seeds} seeds" if seeds > 1 else ""
        lines.append(f"Best per column in **bold** ({note}{extra}).")
        lines.append("")
        lines.append("| solver | " + " | ".join(f"NFE {c}" for c in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for solver in mean.index:
            cells = []
            for c in cols:
                t = _cell_text(mean.at[solver, c], ci.at[solver, c], div.at[solver, c], metric)
                cells.append(f"**{t}**" if best.at[solver, c] else t)
            lines.append(f"| {solver} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    if len(over) and metric in over.columns:
        parts.append(_over_budget_markdown(over, metric))
    return "\n\n".join(parts) + "\n"


def _over_budget_markdown(over: pd.DataFrame, metric: str) -> str:
    """Cells that spent more than their budget (adaptive solvers), at the NFE they used, unranked."""
    lines = [f"### Over budget: {METRIC_NAMES.get(metric, metric)} of cells that used more NFE than asked", "",
             "Adaptive solvers choose their own steps: shown at the NFE they used, never ranked in a budget column.",
             "", "| model | guidance | solver | budget | NFE used | value |", "|---|---:|---|---:|---:|---:|"]
    keys = ["model", "guidance", "solver", "nfe"]
    for (model, g, solver, nfe), part in over.groupby(keys, sort=True):
        v = part[metric].dropna()
        used = part["nfe_used"]
        used_text = f"{used.mean():.0f}" if used.nunique() == 1 else f"{used.min():.0f}-{used.max():.0f}"
        lines.append(f"| {model} | {g:g} | {solver} | {nfe} | {used_text} | "
                     f"{_fmt(v.mean(), metric) if len(v) else '–'} |")
    return "\n".join(lines)


def to_csv(df: pd.DataFrame, metric: str = "fid") -> str:
    s = summarize(within_budget(df), metric)
    s["over_budget"] = False
    over = df[over_budget(df)] if "nfe_used" in df.columns else df.iloc[:0]
    if len(over):
        o = summarize(over, metric)
        o["over_budget"] = True
        s = pd.concat([s, o], ignore_index=True)
    return s.to_csv(index=False)


def to_latex(df: pd.DataFrame, metric: str = "fid") -> str:
    """booktabs tables, one per model and guidance; best per column in bold; needs \\usepackage{booktabs}."""
    parts = []
    for (model, g), mean, ci, div in pivot_tables(within_budget(df), metric):
        best = _best(mean, metric)
        cols = list(mean.columns)
        lines = [f"% {title(model, g, metric)}", "\\begin{tabular}{l" + "r" * len(cols) + "}", "\\toprule",
                 "Solver & " + " & ".join(f"{c}" for c in cols) + " \\\\",
                 "\\midrule"]
        for solver in mean.index:
            cells = []
            for c in cols:
                t = _cell_text(mean.at[solver, c], ci.at[solver, c], div.at[solver, c], metric, pm="$\\pm$")
                t = t.replace("–", "--")
                cells.append(f"\\textbf{{{t}}}" if best.at[solver, c] else t)
            lines.append(tex_escape(solver) + " & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "latex": to_latex}


def render(df: pd.DataFrame, metric: str = "fid", fmt: str = "md") -> str:
    return FORMATS[fmt](df, metric)


def write_tables(df: pd.DataFrame, run_dir, ratio_pairs=(), log=None, fid_changes=False) -> None:
    """fid_vs_nfe.md (FID, then each other metric registered with table=True that the run has: trajectory
    error, conditional accuracy, precision, recall), fid_vs_nfe.tex, ratios.md when the
    spec names ratio pairs (those whose two solvers are both in the results), and fid_changes.md (paired
    FID changes between NFEs) when asked for."""
    from pathlib import Path

    from . import ratios
    from .store import atomic_write
    present = set(df["solver"])
    pairs = [p for p in ratio_pairs if all(s in present or ratios._canonical(s) in present
                                           for s in ratios.parse_pair(p))]
    if log and len(pairs) < len(ratio_pairs):
        log(f"ratios.md: skipped {len(ratio_pairs) - len(pairs)} pair(s) whose solvers are not in the results")
    if pairs:
        text = ratios.to_markdown(df, pairs, "fid")
        if "cond_acc" in df.columns and df["cond_acc"].notna().any():
            text += "\n" + ratios.to_markdown(df, pairs, "cond_acc")
        atomic_write(Path(run_dir) / "ratios.md", f"# Paired ratios, modified / base\n\n{text}")
    text = to_markdown(df, HEADLINE)
    for metric in tabled_metrics():
        if metric != HEADLINE and metric in df.columns and df[metric].notna().any():
            text += "\n" + to_markdown(df, metric)
    atomic_write(Path(run_dir) / "fid_vs_nfe.md", f"# FID-vs-NFE tables\n\n{text}")
    atomic_write(Path(run_dir) / "fid_vs_nfe.tex", to_latex(df, HEADLINE))  # booktabs, for a paper
    if fid_changes and "fid" in df.columns and df["fid"].notna().any():
        from .nfe_changes import write_changes
        write_changes(df, run_dir, log=log)

