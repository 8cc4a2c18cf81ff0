"""Plots of a run: metric vs NFE, trajectory error vs NFE with fitted slopes, sample grids.

Each solver keeps its colour and marker in every plot (a fixed function of its spec string)."""
from __future__ import annotations

import hashlib
import math
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


def metric_vs_nfe(df, metric: str, out_dir: Path, loglog: bool | None = None) -> list[Path]:
    """One figure per (model, guidance): metric against NFE, one line per solver, 95% band over seeds."""
    paths = []
    s = summarize(within_budget(df), metric)   # adaptive cells over their budget are no point of a budget line
    for (model, g), part in s.groupby(["model", "guidance"], sort=True):
        if part["mean"].notna().sum() == 0:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        positive = (part["mean"].dropna() > 0).all()
        logy = bool((loglog if loglog is not None else positive) and positive)
        for solver, line in part.groupby("solver", sort=False):
            line = line.sort_values("nfe")
            st = style(solver)
            label = solver
            if metric == "traj_rmse":
                label = f"{solver} (slope {fit_slope(line['nfe'], line['mean']):.2f})"
            ax.plot(line["nfe"], line["mean"], label=label, lw=1.6, ms=5, **st)
            if line["ci95"].notna().any():
                lo = line["mean"] - line["ci95"]
                if logy:  # an interval reaching zero has no place on a log axis: leave a gap, not a smear
                    lo = lo.where(lo > 0)
                ax.fill_between(line["nfe"], lo, line["mean"] + line["ci95"], color=st["color"], alpha=0.15, lw=0)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        nfes = sorted(part["nfe"].unique())
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(n) for n in nfes])
        ax.minorticks_off() if len(nfes) > 1 else None
        ax.set_xlabel("NFE (network evaluations)")
        name = METRIC_NAMES.get(metric, metric)
        better = "lower is better" if LOWER_IS_BETTER.get(metric, True) else "higher is better"
        ax.set_ylabel(f"{name} ({better})")
        gtxt = f", guidance {g:g}" if g != 1 else ""
        ax.set_title(f"{name} vs NFE — {model}{gtxt}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        path = out_dir / f"{_slug(metric, model, 'g' + format(g, 'g'))}.png"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def sample_grid(df, store, out_dir: Path, max_solvers: int = 30, per_cell: int = 8,
                max_point_columns: int = 6) -> list[Path]:
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
        tag = _slug("samples", model_spec, "g" + format(g, "g"))
        if len(model.shape) == 3:
            paths.append(_image_grid(model, store, get, solvers, nfes, per_cell, out_dir / f"{tag}.png",
                                     f"{model_spec}, guidance {g:g}"))
        elif model.shape == (2,):
            if len(nfes) > max_point_columns:
                nfes = [nfes[round(i)] for i in np.linspace(0, len(nfes) - 1, max_point_columns)]
            paths.append(_points_grid(model, store, get, solvers, nfes, out_dir / f"{tag}.png",
                                      f"{model_spec}"))
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


def plot_run(run_dir, metrics=None) -> list[Path]:
    """A metric-vs-NFE figure per metric the run has (default: those registered with table=True: FID,
    trajectory RMSE, conditional accuracy, precision, recall), then the sample grids."""
    from .metric_families import METRICS, tabled_metrics
    from .store import RunStore, load_results
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    paths = []
    for m in tabled_metrics() if metrics is None else metrics:
        if m in df.columns and df[m].notna().any():
            # 'small' values (trajectory error) on a log axis; fractions (accuracy) read best on a linear 0..1 one
            log_y = {"small": True, "fraction": False}.get(METRICS[m].scale if m in METRICS else "auto")
            paths += metric_vs_nfe(df, m, run_dir, loglog=log_y)
    paths += sample_grid(df, RunStore(run_dir), run_dir)
    return paths
