"""Paired ratio tables: metric(modified) / metric(base) per (model, guidance, NFE), seed by seed.

A modified sampler and its base that ran with the same seed start from the same noise, so their ratio on one
seed is a paired comparison. A cell shows the mean of the per-seed ratios; `+` marks it when every seed
says the modified sampler is better, `-` when every seed says it is worse (two seeds or more; nothing when
the seeds disagree or only one ran). Pairs are written `MOD/BASE`, each side a solver spec as in the run.
"""
from __future__ import annotations

import math

import pandas as pd

from solvers.options import SpecError

from .results_rows import LOWER_IS_BETTER, METRIC_NAMES, tex_escape, within_budget

KEYS = ["model", "guidance", "nfe", "seed"]


def parse_pair(text: str) -> tuple[str, str]:
    """'ddim+ts/ddim:grid=leading' -> ('ddim+ts', 'ddim:grid=leading')."""
    parts = [p.strip() for p in str(text).split("/")]
    if len(parts) != 2 or not all(parts):
        raise SpecError(f"bad ratio pair '{text}'; accepted: MOD/BASE, two solver specs of the run")
    return parts[0], parts[1]


def _canonical(spec: str) -> str:
    """The run's name of a solver spec ('ddim:eta=0' is 'ddim'); the text itself for solvers not registered here."""
    from solvers import get_solver
    try:
        return get_solver(spec).spec
    except (SpecError, ValueError, TypeError):
        return spec


def check_pairs(pairs, solvers) -> list[tuple[str, str]]:
    """Parse pairs and check that both sides are solvers of the run."""
    out = []
    for text in pairs:
        mod, base = (s if s in solvers else _canonical(s) for s in parse_pair(text))
        for s in (mod, base):
            if s not in solvers:
                raise SpecError(f"ratio pair '{text}': solver '{s}' is not in the run; "
                                f"accepted: {', '.join(solvers)}")
        out.append((mod, base))
    return out


def paired_ratios(df: pd.DataFrame, pairs, metric: str = "fid") -> pd.DataFrame:
    """One row per (pair, model, guidance, nfe): mean ratio over seeds, seed count, sign agreement."""
    if metric not in df.columns:
        raise SpecError(f"metric '{metric}' not in results; accepted: {', '.join(LOWER_IS_BETTER)}")
    pairs = check_pairs(pairs, list(dict.fromkeys(df["solver"])))
    df = within_budget(df)   # a cell over its budget is no paired comparison at that NFE
    lower = LOWER_IS_BETTER.get(metric, True)
    rows = []
    for mod, base in pairs:
        a = df[df["solver"] == mod][KEYS + [metric]]
        b = df[df["solver"] == base][KEYS + [metric]]
        m = a.merge(b, on=KEYS, suffixes=("_mod", "_base"))
        m["ratio"] = m[f"{metric}_mod"] / m[f"{metric}_base"]
        m = m[m["ratio"].notna()]
        for (model, g, nfe), part in m.groupby(["model", "guidance", "nfe"], sort=True):
            r = part["ratio"]
            better = (r < 1) if lower else (r > 1)
            worse = (r > 1) if lower else (r < 1)
            sign = ("+" if better.all() else "-" if worse.all() else "") if len(r) > 1 else ""
            rows.append({"pair": f"{mod}/{base}", "model": model, "guidance": g, "nfe": nfe,
                         "ratio": r.mean(), "n_seeds": len(r), "agree": sign})
    return pd.DataFrame(rows, columns=["pair", "model", "guidance", "nfe", "ratio", "n_seeds", "agree"])


def no_pairs_reason(df: pd.DataFrame, pairs, metric: str = "fid") -> str:
    """Why `paired_ratios` is empty, in words: a side without a single value of the metric, or no shared cells."""
    pairs = check_pairs(pairs, list(dict.fromkeys(df["solver"])))
    df = within_budget(df)
    for mod, base in pairs:
        for s in (mod, base):
            vals = pd.to_numeric(df.loc[df["solver"] == s, metric], errors="coerce") if metric in df else []
            if not len(vals) or not vals.notna().any():
                return (f"solver '{s}' has no {METRIC_NAMES.get(metric, metric)} value in the run (every cell NaN: "
                        f"diverged samples, or the metric not measured); a ratio needs a value on both sides")
    return "the pairs share no (model, guidance, NFE, seed) where both sides have a value"


def _cell(ratio, agree) -> str:
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return "–"
    return f"{ratio:.2f}{agree}" if math.isfinite(ratio) else f"{ratio}"


def _grids(r: pd.DataFrame):
    """Yield (model, [(pair, guidance)], cols, text pivot) in a stable order."""
    order = list(dict.fromkeys(r["pair"]))
    for model, part in r.groupby("model", sort=True):
        cols = sorted(part["nfe"].unique())
        part = part.assign(text=[_cell(x, s) for x, s in zip(part["ratio"], part["agree"])])
        text = part.pivot(index=["pair", "guidance"], columns="nfe", values="text")
        index = sorted(text.index, key=lambda k: (order.index(k[0]), k[1]))
        yield model, index, cols, text


def to_markdown(df: pd.DataFrame, pairs, metric: str = "fid") -> str:
    r = paired_ratios(df, pairs, metric)
    if r.empty:
        return f"No paired cells: {no_pairs_reason(df, pairs, metric)}.\n"
    name = METRIC_NAMES.get(metric, metric)
    better = "lower" if LOWER_IS_BETTER.get(metric, True) else "higher"
    parts = []
    for model, index, cols, text in _grids(r):
        lines = [f"### {name} ratio, modified / base — {model}", "",
                 f"Mean over seeds of the per-seed ratio ({better} {name} is better); `+` where every paired seed "
                 "says the modified sampler is better, `-` where every one says it is worse.", "",
                 "| pair | guidance | " + " | ".join(f"NFE {c}" for c in cols) + " |",
                 "|---|---|" + "---:|" * len(cols)]
        for pair, g in index:
            mod, base = pair.split("/")
            cells = [text.at[(pair, g), c] if isinstance(text.at[(pair, g), c], str) else "–" for c in cols]
            lines.append(f"| `{mod}` / `{base}` | {g:g} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_csv(df: pd.DataFrame, pairs, metric: str = "fid") -> str:
    return paired_ratios(df, pairs, metric).to_csv(index=False)


def to_latex(df: pd.DataFrame, pairs, metric: str = "fid") -> str:
    """booktabs tables, one per model; needs \\usepackage{booktabs}."""
    r = paired_ratios(df, pairs, metric)
    parts = []
    for model, index, cols, text in _grids(r):
        lines = [f"% {METRIC_NAMES.get(metric, metric)} ratio, modified / base -- {model}",
                 "\\begin{tabular}{ll" + "r" * len(cols) + "}", "\\toprule",
                 "Pair & Guidance & " + " & ".join(f"{c}" for c in cols) + " \\\\", "\\midrule"]
        for pair, g in index:
            cells = [text.at[(pair, g), c] if isinstance(text.at[(pair, g), c], str) else "--" for c in cols]
            lines.append(tex_escape(pair.replace("/", " / ")) + f" & {g:g} & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "latex": to_latex}


def render(df: pd.DataFrame, pairs, metric: str = "fid", fmt: str = "md") -> str:
    return FORMATS[fmt](df, pairs, metric)
