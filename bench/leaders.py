"""Who leads at each NFE, and is the lead real? The best `top` solvers of each (model, guidance, NFE) with the
gap of each to the best and the 95 % interval of that gap.

The interval is a paired bootstrap (bench/nfe_changes.py's machinery) where the run saved FID features: every
solver of one (model, guidance, seed) starts from the same x_T and labels, so sample i of two solvers at one NFE
is a pair. A replicate draws the seed's sample indices once (the same counts for both solvers), recomputes both
FIDs against the fixed reference moments, and takes their difference; with several seeds the gap and each
replicate are means over the seeds both solvers ran. Without features (and for any metric but FID, which the
features reproduce) the verdict falls back to the seed intervals of the tables: the gap's interval is then the
range of differences the two 95 % intervals allow, so it excludes 0 exactly when the intervals do not overlap.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .metrics import FrechetToReference
from .nfe_changes import REPLICATES, bootstrap_counts, cell_replicates, features_dir, reference_path, weighted_fids
from .results_rows import LOWER_IS_BETTER
from .runfiles import read_cell_features, read_reference_moments
from .store import row_key
from .tables import summarize, within_budget

PAIRED, SEEDS = "paired bootstrap", "seeds"
COLUMNS = ["model", "guidance", "nfe", "rank", "solver", "mean", "ci95", "n_seeds", "gap", "gap_lo", "gap_hi",
           "resolved", "basis", "nfe_used_differs"]
CELL = ["model", "guidance", "solver", "nfe"]


class _Replicates:
    """Bootstrap replicates of the FID of the run's cells, from their saved features (None: no usable features,
    or features that do not reproduce the cell's FID, i.e. not this cell's)."""

    def __init__(self, run_dir, df: pd.DataFrame, replicates: int, tolerance: float = 1e-4):
        self.run_dir, self.replicates, self.tolerance = Path(run_dir), replicates, tolerance
        self.rows = {(r.model, r.guidance, r.solver, r.nfe, r.seed): r for r in df.itertuples(index=False)}
        self.seeds: dict = {}
        for k in self.rows:
            self.seeds.setdefault(k[:4], []).append(k[4])
        self._frechet, self._reps, self._counts = {}, {}, {}

    def frechet(self, model):
        if model not in self._frechet:
            ref = read_reference_moments(reference_path(self.run_dir, model), root=self.run_dir)
            self._frechet[model] = None if ref is None else FrechetToReference(*ref)
        return self._frechet[model]

    def cell(self, model, g, solver, nfe, seed):
        key = (model, g, solver, nfe, seed)
        if key not in self._reps:
            self._reps[key] = self._read(key)
        return self._reps[key]

    def _read(self, key):
        r, frechet = self.rows.get(key), self.frechet(key[0])
        if r is None or frechet is None or not math.isfinite(r.fid):
            return None
        path = features_dir(self.run_dir) / f"{row_key(r._asdict())}.npz"
        got = read_cell_features(path, int(r.n_samples), root=self.run_dir)   # a malformed file is moved aside
        if got is None or got[1].shape[1] != frechet.mu.shape[0]:   # not this reference's features
            return None
        index, feats = got
        full = float(weighted_fids(feats, torch.ones(1, len(index)), frechet)[0])
        if abs(full - r.fid) > self.tolerance * max(1.0, abs(r.fid)):
            return None
        ck = (int(r.seed), int(r.n_samples))
        if ck not in self._counts:   # the seed's draws: the same indices for every solver (and NFE) of the seed
            self._counts[ck] = bootstrap_counts(ck[1], self.replicates, seed=ck[0])
        return int(r.n_samples), float(r.fid), cell_replicates(index, feats, self._counts[ck], frechet)

    def gap(self, model, g, nfe, solver, best):
        """(gap, lo, hi) of FID(solver) - FID(best), mean over the seeds both have features for; None: none."""
        point, boot = [], []
        for seed in sorted(self.seeds.get((model, g, solver, nfe), ())):
            a, b = self.cell(model, g, solver, nfe, seed), self.cell(model, g, best, nfe, seed)
            if a is None or b is None or a[0] != b[0]:   # same sample count: the same x_T, a pair
                continue
            point.append(a[1] - b[1])
            boot.append(a[2] - b[2])
        if not point:
            return None
        lo, hi = np.percentile(torch.stack(boot).mean(0).numpy(), [2.5, 97.5])
        return float(np.mean(point)), float(lo), float(hi)


def _seed_gap(r, best):
    """The gap of the means and the range of differences the two seed intervals allow (NaN with one seed)."""
    return (r["mean"] - best["mean"], (r["mean"] - r["ci95"]) - (best["mean"] + best["ci95"]),
            (r["mean"] + r["ci95"]) - (best["mean"] - best["ci95"]))


def _excludes_zero(lo, hi) -> bool:
    return bool(lo > 0 or hi < 0)   # False for NaN: nothing resolved


def leaders_frame(df: pd.DataFrame, run_dir=None, metric: str = "fid", top: int = 5,
                  replicates: int = REPLICATES) -> pd.DataFrame:
    """One row per (model, guidance, nfe, rank <= top): the solver, its mean and seed interval (tables.summarize),
    gap = metric(solver) - metric(best) with its 95 % interval (gap_lo, gap_hi; NaN for rank 1), resolved
    (the interval excludes 0; for rank 1: rank 2's does), basis ('paired bootstrap' or 'seeds'), and
    nfe_used_differs (a seed's cell spent another NFE than the column: ranked, but flagged).

    Only cells within their budget are ranked; a diverged cell (metric NaN) is left out of its solver's mean."""
    if metric not in df.columns:
        raise ValueError(f"metric '{metric}' not in results; available: "
                         f"{', '.join(m for m in LOWER_IS_BETTER if m in df.columns)}")
    df = within_budget(df)
    lower = LOWER_IS_BETTER.get(metric, True)
    s = summarize(df, metric)
    used = df["nfe_used"] if "nfe_used" in df.columns else df["nfe"]
    differs = (used.notna() & (used != df["nfe"])).groupby([df[k] for k in CELL]).any()
    boot = _Replicates(run_dir, df, replicates) if run_dir is not None and metric == "fid" else None
    rows = []
    for (model, g, nfe), part in s.groupby(["model", "guidance", "nfe"], sort=True):
        part = part[part["mean"].notna()].sort_values("mean", ascending=lower, kind="stable").head(top)
        if part.empty:
            continue
        best = part.iloc[0]
        for rank, (_, r) in enumerate(part.iterrows(), start=1):
            got = boot.gap(model, g, nfe, r["solver"], best["solver"]) if boot and rank > 1 else None
            gap, lo, hi = (math.nan,) * 3 if rank == 1 else (got or _seed_gap(r, best))
            rows.append({"model": model, "guidance": g, "nfe": nfe, "rank": rank, "solver": r["solver"],
                         "mean": r["mean"], "ci95": r["ci95"], "n_seeds": int(r["n_seeds"]), "gap": gap,
                         "gap_lo": lo, "gap_hi": hi, "resolved": _excludes_zero(lo, hi),
                         "basis": PAIRED if got else SEEDS,
                         "nfe_used_differs": bool(differs.get((model, g, r["solver"], nfe), False))})
    out = pd.DataFrame(rows, columns=COLUMNS)
    first = out.index[out["rank"] == 1]
    for i in first:   # the leader's verdict and basis are its lead over the runner-up (none: not resolved)
        nxt = i + 1
        if nxt < len(out) and out.at[nxt, "rank"] == 2:
            out.at[i, "resolved"], out.at[i, "basis"] = out.at[nxt, "resolved"], out.at[nxt, "basis"]
    return out


def best_per_nfe(leaders: pd.DataFrame) -> list[tuple]:
    """(model, guidance, nfe, solver, resolved) of each column's leader, in the frame's order."""
    first = leaders[leaders["rank"] == 1]
    return [(r.model, r.guidance, r.nfe, r.solver, bool(r.resolved)) for r in first.itertuples(index=False)]
