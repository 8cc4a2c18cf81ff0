"""Does FID really change between two NFEs? Paired-bootstrap intervals of FID(NFE b) - FID(NFE a).

Every cell of one (model, guidance, solver, seed) starts from the same x_T and labels, so sample i at NFE a
and sample i at NFE b are a pair. A bootstrap replicate draws sample indices with replacement, the same
indices at every NFE (and for every solver of that seed), and recomputes each cell's FID against the fixed
reference moments from the features the run saved; the 2.5 and 97.5 percentiles of the change over the
replicates bound it. With several seeds, the change and each replicate are means over the seeds (each seed
resampled on its own). An interval that contains 0 says the run cannot tell the two NFEs apart.

The runner saves, per cell, the FID features of its finite samples with their sample indices
(features/<cell key>.npz) and, per model, the reference moments (features/reference-<model>.npz). Models
scored in the data space (gmm2d) and by an image classifier (digits, mnist-unet) have them; InceptionV3-scored
models do not.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.classifier import CLASSIFIERS

from .metrics import FrechetToReference, moments
from .quarantine import quarantine
from .results_rows import title, within_budget
from .runfiles import read_cell_features, read_reference_moments
from .store import atomic_write, row_key, temp_beside

REPLICATES = 200
FEATURE_EXTRACTORS = ("data", *CLASSIFIERS)
FEATURE_BATCH = 4096   # classifier features of a cell this many samples at a time (one batch up to 4,096)


# ---- what the runner saves ---------------------------------------------------------------------------------

def cell_features(model, x: torch.Tensor) -> np.ndarray | None:
    """The FID features of finite model-space samples x, as the cell's FID saw them (None: not saved)."""
    kind = model.feature_extractor
    if kind == "data":
        return x.reshape(x.shape[0], -1).to(torch.float64).cpu().numpy()
    if kind in CLASSIFIERS:
        from models.classifier import load_classifier

        from .fidelity import _clean
        x, _ = _clean(x, None, CLASSIFIERS[kind].shape)
        net, bs = load_classifier(name=kind), FEATURE_BATCH   # in batches: the activations stay flat in N
        with torch.no_grad():
            return torch.cat([net.features(x[i:i + bs]) for i in range(0, max(x.shape[0], 1), bs)]).to(
                torch.float32).numpy()
    return None


def reference_moments(model) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and covariance of the reference the model's FID is taken against (None: not available)."""
    kind = model.feature_extractor
    if kind == "data":
        ref = model.reference
        if ref.mean is not None:
            return ref.mean.double().numpy().reshape(-1), ref.cov.double().numpy()
        return moments(ref.samples)     # bench/metrics.py: np.mean's and np.cov's values in float64
    if kind in CLASSIFIERS and model.fid_reference == CLASSIFIERS[kind].dataset:
        return moments(reference_features(model))
    return None


_REFERENCE_FEATURES: dict = {}   # (extractor, its weights' sha256) -> features of its data set


def reference_features(model) -> np.ndarray | None:
    """The FID features of the real data a classifier-scored model's FID is taken against (all of the
    classifier's data set: the 1,797 digits, the 5,000 MNIST images; None: no such reference). Computed once
    per classifier weights (the moments and the metrics' real features both read them)."""
    space = CLASSIFIERS.get(model.feature_extractor)
    if space is None or model.fid_reference != space.dataset:
        return None
    from models.classifier import classifier_info
    key = (space.name, classifier_info(name=space.name)["sha256"])
    if key not in _REFERENCE_FEATURES:
        _REFERENCE_FEATURES[key] = cell_features(model, space.images())
    return _REFERENCE_FEATURES[key]


def features_dir(run_dir) -> Path:
    return Path(run_dir) / "features"


def reference_path(run_dir, model: str) -> Path:
    return features_dir(run_dir) / f"reference-{re.sub(r'[^A-Za-z0-9.+=-]+', '_', model)}.npz"


def _save_npz(path: Path, **arrays):
    with temp_beside(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_cell_features(run_dir, key: str, index: np.ndarray, feats: np.ndarray):
    _save_npz(features_dir(run_dir) / f"{key}.npz", index=index.astype(np.int64), f=feats)


def save_reference(run_dir, model: str, mu: np.ndarray, cov: np.ndarray):
    _save_npz(reference_path(run_dir, model), mu=mu, cov=cov)


# ---- the Frechet distance of many resampled moment pairs against one reference -----------------------------
# (FrechetToReference, the batched Frechet distance to a fixed reference, is bench/metrics.py's)

def weighted_fids(feats: np.ndarray, weights: torch.Tensor, frechet: FrechetToReference) -> torch.Tensor:
    """FID of each weighted copy of feats (row j repeated weights[b, j] times), weights (B, m) -> (B,).

    With the features centred (the weighted moments then lose no digits) and g_j = S f_j, a replicate's
    S C S = (sum_j w_j g_j g_j^T - n S mu S mu^T) / (n - 1): C itself is never formed, nor multiplied by S."""
    f64 = np.asarray(feats, np.float64)
    centre = torch.from_numpy(f64.mean(0))
    f = torch.from_numpy(f64) - centre
    g = f @ frechet.sqrt
    w = weights.to(torch.float64)
    n = w.sum(1)
    mu_f = (w @ f) / n[:, None]                                   # (B, d), relative to the centre
    mu_g = mu_f @ frechet.sqrt
    tr_cov = (w @ (f * f).sum(1) - n * (mu_f * mu_f).sum(1)) / (n - 1)
    scs = ((g.T[None] * w[:, None, :]) @ g - n[:, None, None] * mu_g[:, :, None] * mu_g[:, None, :]) \
        / (n - 1)[:, None, None]
    return frechet.from_parts(mu_f + centre, tr_cov, scs)


def bootstrap_counts(n_samples: int, replicates: int, seed: int) -> torch.Tensor:
    """(replicates, n_samples) counts of each sample index in a draw of n_samples indices with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_samples, size=(replicates, n_samples))
    counts = np.zeros((replicates, n_samples), np.int64)
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1)
    return torch.from_numpy(counts)


def cell_replicates(index: np.ndarray, feats: np.ndarray, counts: torch.Tensor,
                    frechet: FrechetToReference, chunk: int = 50) -> torch.Tensor:
    """FID of each replicate of one cell: its finite samples weighted by the replicate's counts of their index."""
    w = counts[:, torch.from_numpy(np.asarray(index, np.int64))]
    return torch.cat([weighted_fids(feats, w[i:i + chunk], frechet) for i in range(0, w.shape[0], chunk)])


def paired_changes(fids: dict, reps: dict, keys) -> tuple[float, float, float]:
    """Mean over seeds of FID(b) - FID(a) and its 95 % interval from the replicates.

    fids[(seed, nfe)] -> the cell's FID; reps[(seed, nfe)] -> its replicate FIDs (same draws at every NFE of a
    seed); keys: the (seed, a, b) to average."""
    change = float(np.mean([fids[(s, b)] - fids[(s, a)] for s, a, b in keys]))
    boot = torch.stack([reps[(s, b)] - reps[(s, a)] for s, a, b in keys]).mean(0).numpy()
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return change, float(lo), float(hi)


# ---- the table of a run ------------------------------------------------------------------------------------

class NoFeatures(Exception):
    pass


class _Mismatch(Exception):
    """A cell's saved features disagree with the reference moments: in dimension (malformed) or in FID."""

    def __init__(self, msg: str, path: Path, malformed: bool = False):
        super().__init__(msg)
        self.path, self.malformed = path, malformed


def _model_changes(frechet, run_dir, model, part, replicates, tolerance, counts_cache):
    """The change rows of one model, its count of cells without (usable) features and of cells with them;
    _Mismatch when a cell's features do not reproduce its FID against `frechet`."""
    out, missing, found = [], 0, 0
    dim = frechet.mu.shape[0]
    for (g, solver), cells in part.groupby(["guidance", "solver"], sort=False):
        fids, reps = {}, {}
        for r in cells.itertuples():
            path = features_dir(run_dir) / f"{row_key(r._asdict())}.npz"
            got = read_cell_features(path, int(r.n_samples), root=run_dir)   # allow_pickle=False; bad: moved aside
            if got is None:
                missing += 1
                continue
            index, feats = got
            what = f"saved features of cell {model} {solver} NFE {r.nfe} seed {r.seed}"
            if feats.shape[1] != dim:
                raise _Mismatch(f"{what} have {feats.shape[1]} dimensions, the reference moments {dim}", path, True)
            full = float(weighted_fids(feats, torch.ones(1, len(index)), frechet)[0])
            if abs(full - r.fid) > tolerance * max(1.0, abs(r.fid)):
                raise _Mismatch(f"{what} give FID {full:.6g}, the results say {r.fid:.6g}", path)
            ck = (int(r.seed), int(r.n_samples))
            if ck not in counts_cache:
                counts_cache[ck] = bootstrap_counts(ck[1], replicates, seed=ck[0])
            fids[(int(r.seed), int(r.nfe))] = float(r.fid)
            reps[(int(r.seed), int(r.nfe))] = cell_replicates(index, feats, counts_cache[ck], frechet)
            found += 1
        nfes = sorted({n for _, n in fids})
        for a, b in zip(nfes[:-1], nfes[1:]):
            keys = [(s, a, b) for s in sorted({s for s, _ in fids}) if (s, a) in fids and (s, b) in fids]
            if keys:
                change, lo, hi = paired_changes(fids, reps, keys)
                out.append({"model": model, "guidance": g, "solver": solver, "nfe_a": a, "nfe_b": b,
                            "change": change, "lo": lo, "hi": hi, "n_seeds": len(keys), "replicates": replicates})
    return out, missing, found


def _model_reference(model: str):
    """The reference moments recomputed from the model (None: it cannot be loaded here, or has none)."""
    try:
        from models import load_model
        return reference_moments(load_model(model))
    except Exception:
        return None


def _saved_reference(run_dir, model: str):
    """The saved reference moments of a model; a bad file is moved aside and recomputed from the model (None:
    none saved, or not recomputable)."""
    path = reference_path(run_dir, model)
    if not path.is_file():
        return None
    ref = read_reference_moments(path, root=run_dir)
    if ref is None:
        ref = _model_reference(model)
        if ref is not None:
            save_reference(run_dir, model, *ref)
    return ref


def _same_moments(a, b, rtol: float = 1e-6) -> bool:
    (mu1, c1), (mu2, c2) = a, b
    if mu1.shape != mu2.shape or c1.shape != c2.shape:
        return False
    scale = max(float(np.abs(c2).max(initial=0.0)), 1e-12)
    return bool(np.allclose(mu1, mu2, rtol=rtol, atol=rtol * scale)
                and np.allclose(c1, c2, rtol=rtol, atol=rtol * scale))


def changes_frame(df: pd.DataFrame, run_dir, replicates: int = REPLICATES, tolerance: float = 1e-4) -> pd.DataFrame:
    """One row per (model, guidance, solver, consecutive NFEs a -> b): change, lo, hi, n_seeds.

    The FIDs are the rows' own; each cell's saved features must reproduce its FID (relative `tolerance`), else
    the features belong to something else and the change is not reported. Raises NoFeatures when no cell of
    the run has saved features."""
    run_dir = Path(run_dir)
    df = within_budget(df)   # a cell over its budget is not that NFE
    df = df[df["fid"].notna() & np.isfinite(df["fid"])]
    out, missing, found = [], 0, 0
    counts_cache: dict = {}
    for model, part in df.groupby("model", sort=True):
        ref_file = reference_path(run_dir, model)
        ref = _saved_reference(run_dir, model)
        if ref is None:
            missing += len(part)
            continue
        args = (run_dir, model, part, replicates, tolerance, counts_cache)
        verified = None   # whether the saved reference moments are the model's (None: not checked yet)
        while True:
            try:
                rows, m_missing, m_found = _model_changes(FrechetToReference(*ref), *args)
                break
            except _Mismatch as e:   # the cell's features, or the reference moments, are not this run's
                if verified is None:
                    fresh = _model_reference(model)
                    verified = fresh is not None
                    if verified and not _same_moments(ref, fresh):
                        quarantine(ref_file, f"reference moments differ from model {model}'s ({e}); recomputed",
                                   run_dir)
                        save_reference(run_dir, model, *fresh)
                        ref = fresh
                        continue
                if e.malformed and verified:
                    quarantine(e.path, f"saved FID features: {e}; the cell is left out of the FID-change table",
                               run_dir)
                    continue
                hint = "" if verified else f" (or the reference moments {ref_file} are not this run's)"
                raise ValueError(f"{e}: delete {e.path} or rerun the cell{hint}") from None
        out += rows
        missing += m_missing
        found += m_found
    if not found:
        raise NoFeatures(f"{run_dir} has no saved FID features (features/): they are saved by runs of nfebench "
                         "0.1 and later, for models scored in the data space or by an image classifier")
    res = pd.DataFrame(out, columns=["model", "guidance", "solver", "nfe_a", "nfe_b", "change", "lo", "hi",
                                     "n_seeds", "replicates"])
    res.attrs["missing"] = missing
    return res


def _resolved(lo, hi) -> int:
    return 1 if lo > 0 else (-1 if hi < 0 else 0)


def verdict(rows: pd.DataFrame) -> str:
    """'falls at every step' / 'rises a -> b, ...' (resolved rises) / 'no resolved rise'."""
    signs = [_resolved(r.lo, r.hi) for r in rows.itertuples()]
    if signs and all(s < 0 for s in signs):
        return "falls at every step"
    rises = [f"{r.nfe_a} → {r.nfe_b}" for r, s in zip(rows.itertuples(), signs) if s > 0]
    return "rises " + ", ".join(rises) if rises else "no resolved rise"


def _num(v: float) -> str:
    return f"{v:+.3g}" if abs(v) < 100 else f"{v:+.0f}"


def to_markdown(ch: pd.DataFrame) -> str:
    parts = []
    for (model, g), part in ch.groupby(["model", "guidance"], sort=True):
        steps = sorted({(a, b) for a, b in zip(part["nfe_a"], part["nfe_b"])})
        n_seeds = int(part["n_seeds"].max())
        over = f"mean over {n_seeds} seeds, each" if n_seeds > 1 else "one seed,"
        lines = [f"### {title(model, g, 'fid').replace('FID vs NFE', 'FID change between NFEs')}", "",
                 f"FID(NFE b) - FID(NFE a) on paired samples ({over} resampled with the same indices at every "
                 f"NFE; 95 % interval from {int(part['replicates'].iloc[0])} bootstrap replicates). **Bold**: the "
                 "interval excludes 0; otherwise the run cannot tell the two NFEs apart.", "",
                 "| solver | " + " | ".join(f"{a} → {b}" for a, b in steps) + " | verdict |",
                 "|---|" + "---:|" * len(steps) + "---|"]
        for solver, rows in part.groupby("solver", sort=False):
            by_step = {(r.nfe_a, r.nfe_b): r for r in rows.itertuples()}
            cells = []
            for st in steps:
                r = by_step.get(st)
                if r is None:
                    cells.append("–")
                    continue
                if r.change == 0 and r.lo == 0 and r.hi == 0:   # both NFEs gave the solver the same steps
                    cells.append("0 (same samples)")
                    continue
                text = _num(r.change)
                cells.append((f"**{text}**" if _resolved(r.lo, r.hi) else text) + f" [{_num(r.lo)}, {_num(r.hi)}]")
            lines.append(f"| {solver} | " + " | ".join(cells) + f" | {verdict(rows)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_csv(ch: pd.DataFrame) -> str:
    return ch.to_csv(index=False)


def render(df: pd.DataFrame, run_dir, fmt: str = "md", replicates: int = REPLICATES) -> str:
    ch = changes_frame(df, run_dir, replicates)
    if fmt == "csv":
        return to_csv(ch)
    if fmt == "md":
        return to_markdown(ch)
    raise ValueError(f"FID-change tables come as md or csv, not '{fmt}'")


def write_changes(df: pd.DataFrame, run_dir, log=None) -> bool:
    """fid_changes.md from the run's saved features; False (and a log line) when it has none."""
    try:
        ch = changes_frame(df, run_dir)
    except (NoFeatures, ValueError) as e:   # never lose a finished run over its extra table
        if log:
            log(f"fid_changes.md not written: {e}")
        return False
    if log and ch.attrs.get("missing"):
        log(f"fid_changes.md: {ch.attrs['missing']} cell(s) have no saved features and are left out")
    atomic_write(Path(run_dir) / "fid_changes.md",
                 "# FID change between consecutive NFEs (paired bootstrap)\n\n" + to_markdown(ch))
    return True


__all__ = ["cell_features", "reference_moments", "changes_frame", "render", "write_changes", "verdict",
           "FrechetToReference", "bootstrap_counts", "cell_replicates", "paired_changes", "REPLICATES"]
