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


def mean_pm(m, c, metric, pm="±", latex=False) -> str:
    """Mean ± half-width with consistent digits: the half-width to 2 significant digits and the mean rounded to
    the same decimal place ('12.0 ± 2.0', '4.26 ± 0.58'); small values share a power of ten. Without an
    interval, the metric's own format."""
    if not (isinstance(c, (int, float)) and math.isfinite(c)) or not math.isfinite(m):
        return _fmt(m, metric)
    scale = METRICS[metric].scale if metric in METRICS else "auto"
    top = max(abs(m), abs(c))
    exp = math.floor(math.log10(top)) if scale == "small" and 0 < top < 1e-3 else 0
    m, c = m / 10 ** exp, c / 10 ** exp
    if c == 0:
        text = f"{_fmt(m, metric)} {pm} 0"
    else:
        d = 1 - math.floor(math.log10(abs(c)))
        c = round(c, d)
        d = 1 - math.floor(math.log10(abs(c)))     # 9.96 rounds up to 10: two digits are now 10
        c, dec = round(c, d), max(d, 0)
        text = f"{round(m, d) + 0.0:.{dec}f} {pm} {c:.{dec}f}"
    if exp:
        text = f"({text})$\\times 10^{{{exp}}}$" if latex else f"({text})e{exp}"
    return text


def _cell_text(m, c, d, metric, pm="±"):
    if isinstance(m, float) and math.isnan(m):
        return "–" if not (d and d > 0) else "div"
    text = mean_pm(m, c, metric, pm, latex=pm != "±")
    if d and d > 0:
        text += f" ({d:.0%} div)" if pm == "±" else f" ({d * 100:.0f}\\% div)"
    return text


def _marks(df: pd.DataFrame, metric: str, model, g, card=None):
    """Per (solver, nfe) of one table: the NFE a cell used when below its column's budget, and the cells whose
    rows exist with the metric missing on every seed for a reason other than divergence ('n/a' cells: no
    sample diverged, or the protocol says why the metric cannot be computed)."""
    from .protocol import why_missing
    part = df[(df["model"] == model) & (df["guidance"] == g)]
    reason = why_missing(card, model, metric)
    used, na = {}, set()
    for (solver, nfe), cell in part.groupby(["solver", "nfe"], sort=False):
        if "nfe_used" in cell.columns and (cell["nfe_used"] < nfe).any():
            lo, hi = int(cell["nfe_used"].min()), int(cell["nfe_used"].max())
            used[solver, nfe] = str(lo) if lo == hi else f"{lo}-{hi}"
        if cell[metric].isna().all() and (reason or (cell["diverged_frac"].fillna(0) == 0).all()):
            na.add((solver, nfe))
    return used, na


USED_NOTE = ("† the solver spent fewer NFE than its column's budget (the number after †): its steps cannot spend "
             "the whole budget")


def _footnotes(metric, model, used, na, card) -> list[str]:
    from . import protocol
    notes = [USED_NOTE] if used else []
    if na:
        name = METRIC_NAMES.get(metric, metric)
        if not card:
            notes.append(f"n/a: {name} was not computed for these cells")
        elif metric not in (card.get("metrics") or [metric]):
            notes.append(f"n/a: {name} was not asked for in this run")
        else:
            why = protocol.why_missing(card, model, metric)
            notes.append(f"n/a: {name} was asked for and could not be computed" + (f": {why}" if why else ""))
    if metric == "fid" and card:
        notes += [w for w in protocol.fid_dimension_warnings(card) if w.startswith(f"FID of {model} over")]
    return notes


def _all_na(mean, div, na) -> bool:
    """Every cell of the table is n/a or absent (no rows): the table says so in one line instead."""
    return bool(na) and all((s, c) in na or (pd.isna(mean.at[s, c]) and pd.isna(div.at[s, c]))
                            for s in mean.index for c in mean.columns)


def _intro(df, metric):
    seeds = df["seed"].nunique()
    note = "lower is better" if LOWER_IS_BETTER.get(metric, True) else "higher is better"
    extra = f"; mean ± 95% interval over {seeds} seeds" if seeds > 1 else ""
    return f"Best per column in **bold** ({note}{extra})."


def to_markdown(df: pd.DataFrame, metric: str = "fid", card: dict | None = None) -> str:
    """Markdown tables, one per model and guidance. With a protocol card (bench/protocol.py) each carries the
    card as its caption, and a combined card's NOT COMPARABLE flag as its first line."""
    from . import protocol
    parts = []
    over = df[over_budget(df)] if "nfe_used" in df.columns else df.iloc[:0]
    within = within_budget(df)
    for (model, g), mean, ci, div in pivot_tables(within, metric):
        best = _best(mean, metric)
        cols = list(mean.columns)
        used, na = _marks(within, metric, model, g, card)
        lines = [f"### {title(model, g, metric)}", ""]
        if protocol.flag(card):
            lines += [f"**{protocol.flag(card)}**", ""]
        all_na = _all_na(mean, div, na)
        if not all_na:
            lines += [_intro(df, metric), ""]
            lines.append("| solver | " + " | ".join(f"NFE {c}" for c in cols) + " |")
            lines.append("|---|" + "---:|" * len(cols))
            for solver in mean.index:
                cells = []
                for c in cols:
                    t = "n/a" if (solver, c) in na else \
                        _cell_text(mean.at[solver, c], ci.at[solver, c], div.at[solver, c], metric)
                    if (solver, c) in used:
                        t += f" †{used[solver, c]}"
                    cells.append(f"**{t}**" if best.at[solver, c] else t)
                lines.append(f"| {solver} | " + " | ".join(cells) + " |")
            lines.append("")
        notes = _footnotes(metric, model, used if not all_na else {}, na, card)
        lines += [n + ("" if n.endswith(".") else ".") for n in notes]
        cap = protocol.caption(card, "md", models=[model], solvers=list(mean.index))
        if cap:
            lines += ([""] if notes else []) + [f"_{cap}_"]
        parts.append("\n".join(lines).rstrip("\n"))
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


def to_csv(df: pd.DataFrame, metric: str = "fid", card: dict | None = None) -> str:
    """The summary as CSV (the card is not in it: `nfebench table` prints the card on stderr)."""
    s = summarize(within_budget(df), metric)
    s["over_budget"] = False
    over = df[over_budget(df)] if "nfe_used" in df.columns else df.iloc[:0]
    if len(over):
        o = summarize(over, metric)
        o["over_budget"] = True
        s = pd.concat([s, o], ignore_index=True)
    return s.to_csv(index=False)


def to_latex(df: pd.DataFrame, metric: str = "fid", card: dict | None = None) -> str:
    """booktabs tables, one per model and guidance; an NFE header row over the budget columns, best per column
    in bold, footnote rows under the rule; a ready \\caption (commented out) with the protocol card.
    Needs \\usepackage{booktabs}."""
    from . import protocol
    parts = []
    within = within_budget(df)
    for (model, g), mean, ci, div in pivot_tables(within, metric):
        best = _best(mean, metric)
        cols, n = list(mean.columns), len(mean.columns)
        used, na = _marks(within, metric, model, g, card)
        head = title(model, g, metric)
        intro = _intro(df, metric).replace("**bold**", "bold")
        cap = tex_escape(f"{head.replace('—', '---')}. {intro}").replace("±", "$\\pm$")
        card_cap = protocol.caption(card, "latex", models=[model], solvers=list(mean.index))
        lines = [f"% {head}", f"% \\caption{{{cap}{' ' + card_cap if card_cap else ''}}}",
                 "\\begin{tabular}{l" + "r" * n + "}", "\\toprule"]
        if protocol.flag(card):   # visible in the typeset table, not only in the source
            lines.append(f"\\multicolumn{{{n + 1}}}{{l}}{{\\textbf{{{tex_escape(protocol.flag(card))}}}}} \\\\")
        lines += [f" & \\multicolumn{{{n}}}{{c}}{{NFE}} \\\\", f"\\cmidrule(lr){{2-{n + 1}}}",
                  "Solver & " + " & ".join(f"{c}" for c in cols) + " \\\\", "\\midrule"]
        for solver in mean.index:
            cells = []
            for c in cols:
                t = "n/a" if (solver, c) in na else \
                    _cell_text(mean.at[solver, c], ci.at[solver, c], div.at[solver, c], metric, pm="$\\pm$")
                t = t.replace("–", "--")
                if (solver, c) in used:
                    t += f"$^{{\\dagger {used[solver, c]}}}$"
                cells.append(f"\\textbf{{{t}}}" if best.at[solver, c] else t)
            lines.append(tex_escape(solver) + " & " + " & ".join(cells) + " \\\\")
        lines.append("\\bottomrule")
        for note in _footnotes(metric, model, used, na, card):
            note = tex_escape(note).replace("†", "$^\\dagger$")
            lines.append(f"\\multicolumn{{{n + 1}}}{{l}}{{\\footnotesize {note}}} \\\\")
        lines.append("\\end{tabular}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "latex": to_latex}


def render(df: pd.DataFrame, metric: str = "fid", fmt: str = "md", card: dict | None = None) -> str:
    return FORMATS[fmt](df, metric, card=card)


def write_tables(df: pd.DataFrame, run_dir, ratio_pairs=(), log=None, fid_changes=False, card=None) -> None:
    """fid_vs_nfe.md (FID, then each other metric registered with table=True that the run has or asked for:
    trajectory error, conditional accuracy, precision, recall), fid_vs_nfe.tex, ratios.md when the
    spec names ratio pairs (those whose two solvers are both in the results), and fid_changes.md (paired
    FID changes between NFEs) when asked for. Every table carries the protocol card (`card`, default the run's
    own from run.json) as its caption."""
    from pathlib import Path

    from . import ratios
    from .protocol import read_card
    from .store import atomic_write
    card = card if card is not None else read_card(run_dir)
    asked = set((card or {}).get("metrics") or [])
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
    text = to_markdown(df, HEADLINE, card=card)
    for metric in tabled_metrics():   # a metric asked for and never computed says so, never a silent blank
        if metric != HEADLINE and metric in df.columns and (df[metric].notna().any() or metric in asked):
            text += "\n" + to_markdown(df, metric, card=card)
    atomic_write(Path(run_dir) / "fid_vs_nfe.md", f"# FID-vs-NFE tables\n\n{text}")
    atomic_write(Path(run_dir) / "fid_vs_nfe.tex", to_latex(df, HEADLINE, card=card))  # booktabs, for a paper
    if fid_changes and "fid" in df.columns and df["fid"].notna().any():
        from .nfe_changes import write_changes
        write_changes(df, run_dir, log=log)

