"""Figures a reader takes in at a glance, sized for a paper (7 in wide, text at 7 pt), one per (model, guidance):

- heatmap_<metric>_<model>_g<g>: solvers x NFE, colour the metric on a log scale, the value in each cell, the best
  of each column framed, cells over budget, short of their NFE or with diverged samples hatched;
- leaders_<metric>_<model>_g<g>: at each NFE the best `top` solvers with their seed intervals, filled where the
  gap to the best is resolved (bench/leaders.py), hollow where it is a tie;
- family_<metric>_<model>_g<g>: metric vs NFE in small multiples, one panel per solver family (solvers'
  declared `family`), each seed modifier dashed next to its base;
- ratio_<metric>_<model>_g<g>: paired ratio modified / base per NFE (bench/ratios.py), centred at 1, the cells
  where every seed agrees framed.

Each function returns the paths it wrote; `_*_figure` builds one figure (the tests read its artists)."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from solvers import get_solver  # noqa: E402
from solvers.options import SpecError  # noqa: E402
from solvers.registry import FAMILIES  # noqa: E402

from . import ratios  # noqa: E402
from .leaders import PAIRED, leaders_frame  # noqa: E402
from .metric_families import METRICS  # noqa: E402
from .plots import _slug, select_solvers, style  # noqa: E402
from .results_rows import LOWER_IS_BETTER, METRIC_NAMES, over_budget, within_budget  # noqa: E402
from .tables import _best, _fmt, summarize  # noqa: E402

FORMATS = ("png", "pdf", "svg")
WIDTH, FONT, DPI = 7.0, 7.0, 150
RC = {"font.size": FONT, "axes.titlesize": FONT + 0.5, "axes.labelsize": FONT, "xtick.labelsize": FONT,
      "ytick.labelsize": FONT, "legend.fontsize": FONT - 0.5, "hatch.linewidth": 0.6}
HATCH = {"over": ("xxxx", "over budget (adaptive): not ranked"), "short": ("////", "spent fewer NFE than the column"),
         "diverged": ("....", "diverged samples (or no value)")}


# ---- shared helpers ----------------------------------------------------------------------------------------

def _check(df: pd.DataFrame, metric: str, fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"figure format '{fmt}' not accepted; accepted: {', '.join(FORMATS)}")
    if metric not in df.columns:
        raise ValueError(f"metric '{metric}' not in results; available: "
                         f"{', '.join(m for m in LOWER_IS_BETTER if m in df.columns)}")


def _label(model, labels) -> str:
    return (labels or {}).get(model, model)


def _path(out_dir, kind, metric, model, g, fmt, labels) -> Path:
    return Path(out_dir) / f"{_slug(kind, metric, _label(model, labels), 'g' + format(g, 'g'))}.{fmt}"


def _title(what, metric, model, g, labels) -> str:
    gtxt = f", guidance {g:g}" if g != 1 else ", no guidance"
    return f"{what.format(name=METRIC_NAMES.get(metric, metric))} — {_label(model, labels)}{gtxt}"


def _better(metric) -> str:
    return "lower is better" if LOWER_IS_BETTER.get(metric, True) else "higher is better"


def _log_scale(metric, values) -> bool:
    """Log colour or axis for positive values of a metric that is not a fraction (accuracy reads best linear)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    scale = METRICS[metric].scale if metric in METRICS else "auto"
    return bool(len(v) and (v > 0).all() and scale != "fraction")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _each(df: pd.DataFrame, out_dir, kind, metric, fmt, labels, build) -> list[Path]:
    """build(part, model, g) -> figure or None, saved as kind_<metric>_<model>_g<g>.<fmt> per (model, guidance)."""
    paths = []
    for (model, g), part in df.groupby(["model", "guidance"], sort=True):
        with plt.rc_context(RC):
            fig = build(part, model, g)
        if fig is not None:
            paths.append(_save(fig, _path(out_dir, kind, metric, model, g, fmt, labels)))
    return paths


def _text_colour(rgba) -> str:
    r, g, b = np.asarray(rgba, float).reshape(-1)[:3]   # cmap(norm(v)) is (4,) or (1, 4) by v's type
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"   # relative luminance


def _short(solver: str, width: int = 26) -> str:
    return solver if len(solver) <= width else solver[:width - 1] + "…"


# ---- families and modifier pairs (the solvers' declared family and base) ------------------------------------

@lru_cache(maxsize=None)   # the report asks once per results row
def family(spec: str) -> str:
    """The declared family of a solver spec ('other' for one this process cannot build, e.g. a plugin's)."""
    try:
        return get_solver(spec).family
    except (SpecError, ValueError, TypeError):
        return "other"


def _base_spec(spec: str) -> str | None:
    try:
        return get_solver(spec).base_spec
    except (SpecError, ValueError, TypeError):
        return None


def modifier_pairs(solvers) -> list[tuple[str, str]]:
    """(modifier, base) for every seed modifier whose base, with the options the two share, is in `solvers`."""
    solvers = list(solvers)
    return [(s, b) for s in solvers if (b := _base_spec(s)) is not None and b in solvers]


# ---- heatmap -----------------------------------------------------------------------------------------------

def _cell_flags(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (solver, nfe): over budget, short of the NFE, diverged (any seed: diverged samples or no value)."""
    used = part["nfe_used"] if "nfe_used" in part.columns else part["nfe"]
    div = part["diverged_frac"].fillna(1.0) > 0 if "diverged_frac" in part.columns else False
    flags = pd.DataFrame({"solver": part["solver"], "nfe": part["nfe"],
                          "over": over_budget(part) if "nfe_used" in part.columns else False,
                          "short": used.notna() & (used < part["nfe"]), "diverged": div | part[metric].isna()})
    return flags.groupby(["solver", "nfe"]).any()


def _row_order(mean: pd.DataFrame, metric: str, solvers=None) -> list[str]:
    """The given solvers in their order, else by mean rank over the columns (best first; a cell without a value
    ranks last in its column)."""
    if solvers:
        return [s for s in solvers if s in mean.index]
    ranks = mean.rank(axis=0, ascending=LOWER_IS_BETTER.get(metric, True), na_option="bottom").mean(axis=1)
    return list(ranks.sort_values(kind="stable", na_position="last").index)


def _colour_norm(metric: str, v: np.ndarray):
    """Log colour for a positive metric that is not a fraction; a single value gets a range around it."""
    lo, hi = np.nanmin(v), np.nanmax(v)
    if _log_scale(metric, v):
        return LogNorm(lo, hi) if hi > lo else LogNorm(lo / 2, hi * 2)
    return Normalize(lo, hi) if hi > lo else Normalize(lo - 1, hi + 1)


def _heatmap_figure(part: pd.DataFrame, model, g, metric: str, solvers=None, labels=None):
    s = summarize(part, metric)   # every cell shown; the best is taken within the budget only
    mean = s.pivot(index="solver", columns="nfe", values="mean")
    if mean.notna().sum().sum() == 0:
        return None
    inb = summarize(within_budget(part), metric).pivot(index="solver", columns="nfe", values="mean")
    best = _best(inb, metric).reindex(index=mean.index, columns=mean.columns, fill_value=False)
    rows = _row_order(inb.reindex(mean.index), metric, solvers)
    mean, best = mean.loc[rows], best.loc[rows]
    flags = _cell_flags(part, metric)
    nfes = list(mean.columns)
    v = mean.to_numpy(float)
    norm = _colour_norm(metric, v)
    cmap = plt.get_cmap("viridis_r" if LOWER_IS_BETTER.get(metric, True) else "viridis").with_extremes(bad="#eeeeee")
    fig, ax = plt.subplots(figsize=(WIDTH, 1.2 + 0.2 * len(rows)), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i, solver in enumerate(rows):
        for j, nfe in enumerate(nfes):
            val = v[i, j]
            f = flags.loc[(solver, nfe)] if (solver, nfe) in flags.index else None
            if f is None:   # not run at this NFE (below its minimum)
                continue
            text = _fmt(val, metric) if math.isfinite(val) else "div" if f["diverged"] else "–"
            colour = _text_colour(cmap(norm(val))) if math.isfinite(val) else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=FONT - 0.5, color=colour)
            for kind, (hatch, _) in HATCH.items():
                if f[kind]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch=hatch, lw=0,
                                           edgecolor=(0.35, 0.35, 0.35, 0.75), gid=f"{kind} {solver} {nfe}"))
            if best.at[solver, nfe]:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=1.6, edgecolor="black",
                                       gid=f"best {solver} {nfe}"))
    ax.set_xticks(range(len(nfes)), [str(n) for n in nfes])
    ax.set_yticks(range(len(rows)), [_short(r, 34) for r in rows])
    ax.xaxis.tick_top()
    ax.set_xlabel("NFE")
    ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    name = METRIC_NAMES.get(metric, metric)
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label(f"{name} ({_better(metric)})")
    if isinstance(norm, LogNorm):   # plain numbers at 1, 2, 5 x 10^k, not 6 x 10^0
        cb.ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        cb.ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(_title("{name} by solver and NFE", metric, model, g, labels), fontsize=FONT + 1)
    used = {k for k in HATCH if flags[k].any()}
    handles = [Patch(fill=False, lw=1.6, edgecolor="black", label="best in its column (within budget)")]
    handles += [Patch(facecolor="white", edgecolor=(0.35, 0.35, 0.35), hatch=HATCH[k][0], label=HATCH[k][1])
                for k in HATCH if k in used]
    if any((r, n) not in flags.index for r in rows for n in nfes):   # no cell: below that solver's minimum NFE
        handles.append(Patch(facecolor="#eeeeee", edgecolor="none", label="blank: not run (below its minimum NFE)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    return fig


def heatmap(df: pd.DataFrame, out_dir, metric: str = "fid", fmt: str = "png", solvers=None, labels=None) -> list[Path]:
    """Per (model, guidance) a solvers x NFE heatmap (rows: `solvers` in order, else by mean rank)."""
    _check(df, metric, fmt)
    if solvers:
        df = select_solvers(df, solvers)
        solvers = [s if s in set(df["solver"]) else ratios._canonical(s) for s in solvers]   # the run's spelling
    return _each(df, out_dir, "heatmap", metric, fmt, labels,
                 lambda part, model, g: _heatmap_figure(part, model, g, metric, solvers, labels))


# ---- leaders -----------------------------------------------------------------------------------------------

def _leaders_figure(lead: pd.DataFrame, model, g, metric: str, labels=None, ncols: int = 2):
    nfes = sorted(lead["nfe"].unique())
    if not nfes:
        return None
    top = int(lead["rank"].max())
    nrows = math.ceil(len(nfes) / min(ncols, len(nfes)))
    ncols = min(ncols, len(nfes))
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 0.7 + nrows * (0.5 + 0.17 * top)), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(nfes):]:
        ax.set_visible(False)
    for ax, nfe in zip(axes.flat, nfes):
        col = lead[lead["nfe"] == nfe].sort_values("rank")
        best = col.iloc[0]
        for y, r in enumerate(col.itertuples(index=False)):
            st = style(r.solver)
            ax.errorbar(r.mean, y, xerr=r.ci95 if math.isfinite(r.ci95) else None, fmt="none",
                        ecolor=st["color"], lw=1.0, capsize=1.5)
            ax.plot(r.mean, y, linestyle="none", marker=st["marker"], ms=6.5 if r.rank == 1 else 5,
                    mec=st["color"], mew=1.2, mfc=st["color"] if r.resolved else "white",
                    gid=f"{'resolved' if r.resolved else 'tie'} {r.solver} {nfe}")
        ax.axvline(best["mean"], color="0.5", lw=0.6, ls=":")
        labels_y = [f"{_short(r.solver, 30)}{'*' if r.nfe_used_differs else ''}  "
                    + (_fmt(r.mean, metric) if r.rank == 1 else f"{r.gap:+.2g}") for r in col.itertuples()]
        ax.set_yticks(range(len(col)), labels_y)
        ax.get_yticklabels()[0].set_fontweight("bold")
        ax.set_ylim(top - 0.5, -0.5)   # linear x: the gaps read as lengths
        ax.set_title(f"NFE {nfe}" + ("" if best["resolved"] else " — leader not resolved"), loc="left")
        ax.tick_params(axis="y", length=0)
        ax.grid(True, axis="x", alpha=0.3)
    basis = set(lead["basis"])
    how = "paired bootstrap of the samples" if basis == {PAIRED} else \
        "seed intervals" if PAIRED not in basis else "paired bootstrap where features exist, else seed intervals"
    handles = [Line2D([], [], ls="none", marker="o", color="0.2", mfc="0.2",
                      label="resolved: the 95% interval of its gap to the best excludes 0"),
               Line2D([], [], ls="none", marker="o", color="0.2", mfc="white",
                      label="tie with the best (interval includes 0)")]
    note = f"bars: 95% interval over seeds; label: value of the best, gap of the others ({how})"
    if lead["nfe_used_differs"].any():
        note += "; * spent fewer NFE than the column"
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, title=note,
               title_fontsize=FONT - 0.5)
    fig.suptitle(_title("Best {name} at each NFE", metric, model, g, labels) + f" ({_better(metric)})",
                 fontsize=FONT + 1)
    return fig


def leaders(df: pd.DataFrame, out_dir, run_dir=None, metric: str = "fid", top: int = 5, fmt: str = "png",
            labels=None, lead: pd.DataFrame | None = None) -> list[Path]:
    """Per (model, guidance) the `top` solvers at each NFE (bench/leaders.py; `lead`: its frame, if computed)."""
    _check(df, metric, fmt)
    lead = leaders_frame(df, run_dir, metric, top) if lead is None else lead
    return _each(lead, out_dir, "leaders", metric, fmt, labels,
                 lambda part, model, g: _leaders_figure(part, model, g, metric, labels))


# ---- family panels -----------------------------------------------------------------------------------------

def family_panels_of(solvers, max_lines: int = 5) -> list[tuple[str, list[str]]]:
    """(title, solvers) per panel: one family a panel, in FAMILIES' order, each seed modifier with its base (in
    the base's family), split into panels of at most `max_lines` lines keeping a base with its modifiers."""
    groups: dict[str, dict[str, list[str]]] = {}   # family -> root solver name -> its lines
    for s in solvers:
        root = _base_spec(s) or s      # a modifier joins its base's group (and family)
        groups.setdefault(family(root), {}).setdefault(root, []).append(s)
    panels = []
    for fam in [f for f in FAMILIES if f in groups]:
        packs = [[]]
        for lines in groups[fam].values():
            if packs[-1] and len(packs[-1]) + len(lines) > max_lines:
                packs.append([])
            packs[-1].extend(lines)
        panels += [(fam if len(packs) == 1 else f"{fam} ({i}/{len(packs)})", p) for i, p in enumerate(packs, 1)]
    return panels


def _family_figure(part: pd.DataFrame, model, g, metric: str, labels=None, max_lines: int = 5, ncols: int = 3):
    s = summarize(within_budget(part), metric)
    s = s[s["mean"].notna()]
    if s.empty:
        return None
    panels = family_panels_of(list(dict.fromkeys(s["solver"])), max_lines)
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 0.4 + 2.0 * nrows), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
        elif i + ncols >= len(panels):   # the lowest panel of its column: NFE labels under it
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("NFE")
    nfes = sorted(s["nfe"].unique())
    logy = _log_scale(metric, s["mean"])
    for ax, (title, members) in zip(axes.flat, panels):
        for solver in members:
            line = s[s["solver"] == solver].sort_values("nfe")
            modifier = _base_spec(solver) is not None
            ax.plot(line["nfe"], line["mean"], lw=1.2, ms=3.5, ls="--" if modifier else "-",
                    label=_short(solver, 24), gid=f"{'modifier' if modifier else 'line'} {solver}", **style(solver))
        ax.set_title(title, loc="left")
        ax.legend(loc="best", frameon=True, framealpha=0.8, edgecolor="none", handlelength=2.2, borderaxespad=0.2)
        ax.grid(True, alpha=0.3)
    ax0 = axes.flat[0]
    ax0.set_xscale("log")
    if logy:
        ax0.set_yscale("log")
    ax0.set_xticks(nfes, [str(n) for n in nfes])
    ax0.minorticks_off()
    for ax in axes[:, 0]:
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
    fig.suptitle(_title("{name} vs NFE by solver family", metric, model, g, labels)
                 + f" ({_better(metric)}; dashed: seed modifier on its base)", fontsize=FONT + 1)
    return fig


def family_panels(df: pd.DataFrame, out_dir, metric: str = "fid", fmt: str = "png", labels=None,
                  max_lines: int = 5) -> list[Path]:
    """Per (model, guidance) metric vs NFE, one panel per solver family, shared axes."""
    _check(df, metric, fmt)
    return _each(df, out_dir, "family", metric, fmt, labels,
                 lambda part, model, g: _family_figure(part, model, g, metric, labels, max_lines))


# ---- paired ratio heatmap ----------------------------------------------------------------------------------

RATIO_SPAN = math.log(4)   # ratios beyond 4x (or 1/4) saturate the colour: one outlier must not bleach the rest


def _ratio_ticks(span: float) -> list[float]:
    steps = (0.25, 0.5, 1.0, 2.0, 4.0) if span >= math.log(2) else (0.8, 0.9, 1.0, 1.1, 1.25)
    return [x for x in steps if abs(math.log(x)) <= span + 1e-9]


def _ratio_figure(r: pd.DataFrame, model, g, metric: str, labels=None):
    if r.empty:
        return None
    order = list(dict.fromkeys(r["pair"]))
    ratio = r.pivot(index="pair", columns="nfe", values="ratio").loc[order]
    agree = r.pivot(index="pair", columns="nfe", values="agree").loc[order]
    nfes = list(ratio.columns)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(ratio.to_numpy(float))   # the colour is the log ratio: 1/2 and 2 equally far from 1
    span = min(max(np.abs(v[np.isfinite(v)]).max(initial=0.0), math.log(1.25)), RATIO_SPAN)
    # blue where the modified sampler is better: ratio < 1 for a lower-is-better metric
    cmap = plt.get_cmap("RdBu_r" if LOWER_IS_BETTER.get(metric, True) else "RdBu").with_extremes(bad="#eeeeee")
    norm = Normalize(-span, span, clip=True)
    fig, ax = plt.subplots(figsize=(WIDTH, 1.2 + 0.24 * len(order)), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i, pair in enumerate(order):
        for j, nfe in enumerate(nfes):
            x, sign = ratio.at[pair, nfe], agree.at[pair, nfe]
            if not isinstance(sign, str):
                continue   # no paired cell
            ok = bool(np.isfinite(x) and x > 0)
            ax.text(j, i, f"{x:.2f}{sign}", ha="center", va="center", fontsize=FONT - 0.5,
                    fontweight="bold" if sign else "normal",
                    color=_text_colour(cmap(norm(math.log(x)))) if ok else "black")
            if sign:   # every seed agrees on the direction
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=1.2, edgecolor="black",
                                       gid=f"agree{sign} {pair} {nfe}"))
    ax.set_xticks(range(len(nfes)), [str(n) for n in nfes])
    ax.set_yticks(range(len(order)), [_short(p.replace("/", " / "), 44) for p in order])
    ax.xaxis.tick_top()
    ax.set_xlabel("NFE")
    ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    ticks = _ratio_ticks(span)
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, ticks=[math.log(x) for x in ticks],
                      extend="both" if span == RATIO_SPAN else "neither")
    cb.ax.set_yticklabels([f"{x:g}" for x in ticks])
    cb.set_label("modified / base")
    name = METRIC_NAMES.get(metric, metric)
    fig.suptitle(_title("Paired {name} ratio, modified / base", metric, model, g, labels), fontsize=FONT + 1)
    handles = [Patch(fill=False, lw=1.2, edgecolor="black",
                     label="every seed agrees: + modified better, − modified worse")]
    fig.legend(handles=handles, loc="outside lower center", frameon=False, title_fontsize=FONT - 0.5,
               title=f"mean over seeds of the per-seed ratio ({_better(metric)} {name}; blue: modified better)")
    return fig


def ratio_heatmap(df: pd.DataFrame, out_dir, metric: str = "fid", fmt: str = "png", labels=None,
                  pairs=None) -> list[Path]:
    """Per (model, guidance) the paired ratio of every seed-modifier/base pair in the run (and `pairs`, MOD/BASE
    texts or tuples, whose solvers are both in the run)."""
    _check(df, metric, fmt)
    present = list(dict.fromkeys(df["solver"]))
    found = [f"{m}/{b}" for m, b in modifier_pairs(present)]
    for p in pairs or ():
        text = p if isinstance(p, str) else "/".join(p)
        try:
            if text not in found and ratios.check_pairs([text], present):
                found.append(text)
        except SpecError:   # a side not in this run
            continue
    if not found:
        return []
    r = ratios.paired_ratios(df, found, metric)
    return _each(r, out_dir, "ratio", metric, fmt, labels,
                 lambda part, model, g: _ratio_figure(part, model, g, metric, labels))


# ---- a run's figures ---------------------------------------------------------------------------------------

def _spec_ratios(run_dir: Path) -> list[str]:
    from .runfiles import read_json_object
    path = run_dir / "run.json"
    run = read_json_object(path, "run.json", root=run_dir) if path.is_file() else None
    spec = (run or {}).get("spec")
    return [p for p in spec.get("ratios", []) if isinstance(p, str)] if isinstance(spec, dict) else []


def write_figures(run_dir, metric: str = "fid", fmt: str = "png", solvers=None, labels=None,
                  top: int = 5) -> dict[str, list[Path]]:
    """The four kinds of figure of a run, written into the run directory."""
    from .store import load_results
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    _check(df, metric, fmt)
    df = select_solvers(df, solvers)
    return {"leaders": leaders(df, run_dir, run_dir, metric, top, fmt, labels),
            "heatmap": heatmap(df, run_dir, metric, fmt, solvers, labels),
            "family": family_panels(df, run_dir, metric, fmt, labels),
            "ratio": ratio_heatmap(df, run_dir, metric, fmt, labels, pairs=_spec_ratios(run_dir))}
