"""Plots of a run: metric vs NFE, trajectory error vs NFE with fitted slopes, sample grids.

Each solver keeps its colour and marker in every plot (a fixed function of its spec string)."""
from __future__ import annotations

import hashlib
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .tables import LOWER_IS_BETTER, METRIC_NAMES, summarize, within_budget  # noqa: E402

# 26 colours: the strong halves of tab20 and Dark2 first (visible on white and on the grey density plots), the
# pale half of tab20 last; greys left out
_TAB20 = plt.get_cmap("tab20").colors
_COLORS = ([c for i, c in enumerate(_TAB20) if i % 2 == 0 and i != 14] + list(plt.get_cmap("Dark2").colors)[:7]
           + [c for i, c in enumerate(_TAB20) if i % 2 == 1 and i != 15])
_MARKERS = "os^vD<>pPhX*d"


def style(solver: str) -> dict:
    """Stable colour and marker per solver: the colour follows the solver's name in the sorted registry, the
    marker its options, so the same solver looks the same in every plot and every run."""
    from solvers import list_solvers
    name, _, opts = solver.partition(":")
    names = list(list_solvers())
    idx = names.index(name) if name in names else int(hashlib.md5(name.encode()).hexdigest(), 16)
    m = int(hashlib.md5(opts.encode()).hexdigest(), 16) % len(_MARKERS) if opts else idx % len(_MARKERS)
    return {"color": _COLORS[idx % len(_COLORS)], "marker": _MARKERS[m]}


def _slug(*parts) -> str:
    return "_".join(str(p).replace(":", "-").replace("/", "-").replace(",", "-").replace("=", "") for p in parts)


def fit_slope(nfe, err) -> float:
    nfe, err = np.asarray(nfe, float), np.asarray(err, float)
    ok = np.isfinite(err) & (err > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(nfe[ok]), np.log(err[ok]), 1)[0])


def select_solvers(df, solvers):
    """The rows of the named solvers (specs as in the run, or any spelling that resolves to one); an unknown one
    is bad input, named with what the run has."""
    if not solvers:
        return df
    from solvers.options import SpecError

    from .ratios import _canonical
    have = list(dict.fromkeys(df["solver"]))
    want = []
    for s in solvers:
        name = s if s in have else _canonical(s)
        if name not in have:
            raise SpecError(f"solver '{s}' is not in the run; it has: {', '.join(have)}")
        want.append(name)
    return df[df["solver"].isin(want)]


def parse_labels(items, models) -> dict:
    """['hf:/data/ddpm-cifar10-32=cifar10', ...] -> {model: label}: the short names titles and file names use."""
    from solvers.options import SpecError
    out = {}
    for item in items or ():
        model, sep, label = str(item).rpartition("=")
        if not sep or not model or not label.strip():
            raise SpecError(f"bad --label '{item}'; accepted: MODEL=SHORT, MODEL one of {', '.join(models)}")
        if model not in models:
            raise SpecError(f"--label '{item}': model '{model}' is not in the run; it has: {', '.join(models)}")
        out[model] = label.strip()
    return out


BANDS = ("ci", "diff", "ratio")


def paired(df, metric: str, baseline: str, band: str):
    """Rows whose metric is replaced by its paired comparison with the baseline on the same seed (same x_T):
    metric - metric(baseline) ('diff') or metric / metric(baseline) ('ratio'); their mean and t-interval over
    seeds then show what the seeds' spread of each solver alone hides."""
    keys = ["model", "guidance", "nfe", "seed"]
    base = df[df["solver"] == baseline][keys + [metric]].rename(columns={metric: "_base"})
    m = df.merge(base, on=keys)
    m[metric] = m[metric] - m["_base"] if band == "diff" else m[metric] / m["_base"]
    return m.drop(columns="_base")


def _short_nfe(df) -> set:
    """(model, guidance, solver, nfe) of the cells that spent fewer NFE than their column's budget."""
    if "nfe_used" not in df.columns:
        return set()
    short = df[df["nfe_used"] < df["nfe"]]
    return set(zip(short["model"], short["guidance"], short["solver"], short["nfe"]))


def metric_vs_nfe(df, metric: str, out_dir: Path, loglog: bool | None = None, *, fmt: str = "png",
                  labels: dict | None = None, baseline: str | None = None, band: str = "ci",
                  card: dict | None = None) -> list[Path]:
    """One figure per (model, guidance): metric against NFE, one line per solver, 95% band over seeds (band
    'ci'), or each solver's paired difference or ratio to `baseline` seed by seed ('diff', 'ratio') with its
    95% band. A point whose cell spent fewer NFE than its budget is hollow; a combined card whose runs differ
    puts its NOT COMPARABLE line over the figure. Files `<metric>[_<band>-vs-<baseline>]_<model>_g<g>.<fmt>`,
    the model under its label when `labels` gives one."""
    from .protocol import flag
    labels = labels or {}
    within = within_budget(df)   # adaptive cells over their budget are no point of a budget line
    short = _short_nfe(within)
    data = paired(within, metric, baseline, band) if baseline and band != "ci" else within
    s = summarize(data, metric)
    name = METRIC_NAMES.get(metric, metric)
    paths = []
    for (model, g), part in s.groupby(["model", "guidance"], sort=True):
        if part["mean"].notna().sum() == 0:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        positive = (part["mean"].dropna() > 0).all()
        logy = bool((loglog if loglog is not None else positive) and positive) and band != "diff"
        if band != "ci":
            ax.axhline(0.0 if band == "diff" else 1.0, color=style(baseline)["color"], lw=1.2, ls="--",
                       label=f"{baseline} (baseline)")
        hollow = False
        for solver, line in part.groupby("solver", sort=False):
            if band != "ci" and solver == baseline:
                continue
            line = line.sort_values("nfe")
            st = style(solver)
            label = solver
            if metric == "traj_rmse" and band == "ci":
                label = f"{solver} (slope {fit_slope(line['nfe'], line['mean']):.2f})"
            ax.plot(line["nfe"], line["mean"], label=label, lw=1.6, ms=5, **st)
            few = line[[(model, g, solver, n) in short for n in line["nfe"]]]
            if len(few):   # hollow: the cell spent fewer NFE than its column
                hollow = True
                ax.plot(few["nfe"], few["mean"], ls="none", marker=st["marker"], ms=5, mfc="white",
                        mec=st["color"], mew=1.3)
            if line["ci95"].notna().any():
                lo = line["mean"] - line["ci95"]
                if logy:  # an interval reaching zero has no place on a log axis: leave a gap, not a smear
                    lo = lo.where(lo > 0)
                ax.fill_between(line["nfe"], lo, line["mean"] + line["ci95"], color=st["color"], alpha=0.15, lw=0)
        if hollow:
            ax.plot([], [], ls="none", marker="o", mfc="white", mec="0.3", label="hollow: fewer NFE than its column")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        nfes = sorted(part["nfe"].unique())
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(n) for n in nfes])
        ax.minorticks_off() if len(nfes) > 1 else None
        ax.set_xlabel("NFE (network evaluations)")
        better = "lower is better" if LOWER_IS_BETTER.get(metric, True) else "higher is better"
        ylabel = {"ci": f"{name} ({better})",
                  "diff": f"{name} − {name} of {baseline}, paired by seed ({better})",
                  "ratio": f"{name} / {name} of {baseline}, paired by seed ({better})"}[band]
        ax.set_ylabel(ylabel)
        gtxt = f", guidance {g:g}" if g != 1 else ""
        what = name if band == "ci" else f"{name} {'difference' if band == 'diff' else 'ratio'} to {baseline}"
        ax.set_title(f"{what} vs NFE — {labels.get(model, model)}{gtxt}")
        if flag(card):
            fig.suptitle(textwrap.fill(flag(card), 110), color="firebrick", fontsize=7.5, x=0.02, ha="left")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        mode = [] if band == "ci" else [f"{band}-vs-{baseline}"]
        path = out_dir / f"{_slug(metric, *mode, labels.get(model, model), 'g' + format(g, 'g'))}.{fmt}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def sample_grid(df, store, out_dir: Path, max_solvers: int = 30, per_cell: int = 8,
                max_point_columns: int = 6, *, fmt: str = "png", labels: dict | None = None) -> list[Path]:
    """Image models: rows solvers, columns NFE, same noise (seed of the first cells), `per_cell` images in two
    rows per cell. gmm2d: samples over the true density, one panel per NFE for each solver (at most
    `max_point_columns` NFE values, spread over the list, so the figure stays readable)."""
    from models import load_model

    paths = []
    seed0 = df["seed"].min()
    for (model_spec, g), part in df[df["seed"] == seed0].groupby(["model", "guidance"], sort=True):
        model = load_model(model_spec)
        solvers = list(dict.fromkeys(part["solver"]))[:max_solvers]
        nfes = sorted(part["nfe"].unique())
        from .store import row_key
        get = {}
        for _, r in part.iterrows():
            get[(r["solver"], int(r["nfe"]))] = row_key(r)
        shown = (labels or {}).get(model_spec, model_spec)
        tag = _slug("samples", shown, "g" + format(g, "g"))
        if len(model.shape) == 3:
            paths.append(_image_grid(model, store, get, solvers, nfes, per_cell, out_dir / f"{tag}.{fmt}",
                                     f"{shown}, guidance {g:g}"))
        elif model.shape == (2,):
            if len(nfes) > max_point_columns:
                nfes = [nfes[round(i)] for i in np.linspace(0, len(nfes) - 1, max_point_columns)]
            paths.append(_points_grid(model, store, get, solvers, nfes, out_dir / f"{tag}.{fmt}",
                                      f"{shown}"))
    return paths


def _to_img(x):
    x = ((x.clamp(-1, 1) + 1) / 2).numpy()
    return np.transpose(x, (1, 2, 0)) if x.shape[0] == 3 else x[0]


def _pad_img(img):
    """A 1-pixel white frame around an (H, W) or (H, W, 3) image (never padding the channel axis)."""
    return np.pad(img, ((1, 1), (1, 1)) + ((0, 0),) * (img.ndim - 2), constant_values=1.0)


def _image_grid(model, store, get, solvers, nfes, per_cell, path, title):
    cols = (per_cell + 1) // 2                   # a cell shows its images in two rows
    tile = 0.42                                  # inches per image
    fig, axes = plt.subplots(len(solvers), len(nfes), figsize=(tile * cols * len(nfes) * 1.08 + 1.4,
                                                                tile * 2 * len(solvers) * 1.12 + 0.7),
                             squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.12})
    for i, s in enumerate(solvers):
        for j, n in enumerate(nfes):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            smp = store.read_samples(get[(s, n)]) if (s, n) in get else None
            if smp is not None:
                xs = torch_nan_to_gray(smp["x"][:2 * cols].float())
                tiles = [_pad_img(_to_img(x)) for x in xs]
                tiles += [np.ones_like(tiles[0])] * (2 * cols - len(tiles))
                block = np.concatenate([np.concatenate(tiles[:cols], axis=1),
                                        np.concatenate(tiles[cols:], axis=1)], axis=0)
                ax.imshow(block, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if i == 0:
                ax.set_title(f"NFE {n}", fontsize=9)
            if j == 0:
                ax.set_ylabel(s, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"Samples (same noise across solvers and NFE) — {title}", fontsize=10,
                 y=1 - 0.2 / fig.get_figheight())
    fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.99, bottom=0.01, top=1 - 0.75 / fig.get_figheight())
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def torch_nan_to_gray(xs):
    import torch
    return torch.nan_to_num(xs, nan=0.0, posinf=1.0, neginf=-1.0)


def _points_grid(model, store, get, solvers, nfes, path, title):
    import torch
    ref = model.reference.sample(20000, torch.Generator().manual_seed(0)).numpy()
    H, xe, ye = np.histogram2d(ref[:, 0], ref[:, 1], bins=120, range=[[-3.5, 3.5], [-3.5, 3.5]], density=True)
    side = 2.2 if len(solvers) <= 8 else 1.4
    fig, axes = plt.subplots(len(solvers), len(nfes), figsize=(side * len(nfes) + 1.5, side * len(solvers) + 0.6),
                             squeeze=False)
    for i, s in enumerate(solvers):
        for j, n in enumerate(nfes):
            ax = axes[i][j]
            dens = np.log1p(H.T * 20)
            ax.imshow(dens, origin="lower", extent=[-3.5, 3.5, -3.5, 3.5], cmap="Greys", aspect="equal",
                      vmin=0, vmax=2 * dens.max())  # light grey: the samples on top stay visible
            smp = store.read_samples(get[(s, n)]) if (s, n) in get else None
            if smp is not None:
                p = smp["x"].double().numpy()
                dark = tuple(0.75 * c for c in matplotlib.colors.to_rgb(style(s)["color"]))  # stands out on grey
                ax.scatter(p[:, 0], p[:, 1], s=2.5, color=dark, alpha=0.8, lw=0)
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"NFE {n}", fontsize=9)
            if j == 0:
                ax.set_ylabel(s, fontsize=8)
    fig.suptitle(f"Samples over the true density (grey) — {title}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title above the NFE labels
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_run(run_dir, metrics=None, *, out_dir=None, solvers=None, fmt: str = "png", labels: dict | None = None,
             baseline: str | None = None, band: str = "ci", card: dict | None = None) -> list[Path]:
    """A metric-vs-NFE figure per metric the run has (default: those registered with table=True: FID,
    trajectory RMSE, conditional accuracy, precision, recall), then the sample grids, into the run (or
    `out_dir`). Options as `metric_vs_nfe`'s; `solvers` a subset of the run's."""
    from .protocol import read_card
    from .store import RunStore, load_results
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(run_dir)
    card = card if card is not None else read_card(run_dir)
    paths = plot_frame(df, out, metrics, solvers=solvers, fmt=fmt, labels=labels, baseline=baseline,
                       band=band, card=card)
    paths += sample_grid(select_solvers(df, solvers), RunStore(run_dir), out, fmt=fmt, labels=labels)
    return paths


def plot_runs(run_dirs, out_dir=None, metrics=None, **options) -> list[Path]:
    """One run: `plot_run` (into the run, or `out_dir`). Several: their combined results' metric figures in
    `out_dir` (bench/combine.py), flagged NOT COMPARABLE when their protocol cards differ; no sample grids."""
    from .combine import load_runs
    if len(set(map(str, run_dirs))) == 1:
        return plot_run(run_dirs[0], metrics, out_dir=out_dir, **options)
    df, card = load_runs(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return plot_frame(df, out, metrics, card=card, **options)


def plot_frame(df, out_dir: Path, metrics=None, *, solvers=None, baseline=None, band="ci", **options) -> list[Path]:
    """The metric-vs-NFE figures of a results frame (every tabled metric it has, or `metrics`)."""
    from .metric_families import METRICS, tabled_metrics
    if baseline is not None:
        select_solvers(df, [baseline])   # named in the run, before any drawing
    keep = None if not solvers else list(select_solvers(df, solvers)["solver"].unique()) + \
        ([] if baseline is None else list(select_solvers(df, [baseline])["solver"].unique()))
    part = df if keep is None else df[df["solver"].isin(keep)]
    paths = []
    for m in tabled_metrics() if metrics is None else metrics:
        if m in part.columns and part[m].notna().any():
            # 'small' values (trajectory error) on a log axis; fractions (accuracy) read best on a linear 0..1 one
            log_y = {"small": True, "fraction": False}.get(METRICS[m].scale if m in METRICS else "auto")
            paths += metric_vs_nfe(part, m, out_dir, loglog=log_y, baseline=baseline, band=band, **options)
    return paths
