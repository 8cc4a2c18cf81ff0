"""The built-in metrics: FID, KID and conditional accuracy (one computation in the model's FID feature space),
trajectory RMSE (against the exact ODE solution) and the diverged fraction (every cell).

FID and KID are the data-space ones of bench/metrics.py for 'data' models (gmm2d), torch-fidelity's with the
digits classifier (bench/fidelity.py, which also gives the conditional accuracy), and InceptionV3's for hub
image models (bench/inception.py); each needs 2 finite samples, the others 1.
"""
from __future__ import annotations

from .metric import Metric, register_metric
from .metrics import data_space_metrics, traj_rmse


def feature_space_metrics(data) -> dict:
    """{'fid', 'kid'} (and 'cond_acc' for digits-classifier models) of the cell's finite samples."""
    model, spec, xs = data.model, data.spec, data.samples
    kind = model.feature_extractor
    if kind in ("data", "inception-v3-compat") and xs.shape[0] < 2:
        return {}
    if kind == "data":
        return data_space_metrics(model, xs, spec.kid_subsets)
    if kind == "inception-v3-compat":
        from .inception import inception_metrics
        return inception_metrics(model, xs, inception_weights=spec.inception_weights or None,
                                 fid_stats=spec.fid_stats or None, reference=model.fid_reference,
                                 cache_dir=data.cache_dir, kid_subsets_n=spec.kid_subsets, feats=data.features())
    from .fidelity import fidelity_metrics
    return fidelity_metrics(model, xs, data.labels, cache_dir=data.cache_dir, kid_subsets=spec.kid_subsets)


def trajectory_rmse(data) -> dict:
    """RMSE of the first k samples (those of them that are finite) from the exact ODE solution of their x_T."""
    ref = data.reference_solution()
    n = data.x.shape[0]
    k = min(data.spec.reference_samples or n, n)   # paired noise: the first k samples of every cell share x_T
    okk = data.ok[:k]
    return {"traj_rmse": traj_rmse(data.x[:k][okk], ref[okk])} if okk.sum() >= 1 else {}


def diverged_fraction(data) -> dict:
    return {"diverged_frac": float(1 - data.ok.double().mean())}


register_metric(Metric("fid", "FID", True, {"samples", "features"}, feature_space_metrics, table=True))
register_metric(Metric("kid", "KID", True, {"samples", "features"}, feature_space_metrics, scale="small"))
register_metric(Metric("traj_rmse", "trajectory RMSE", True, {"samples", "reference_solution"}, trajectory_rmse,
                       table=True, scale="small"))
register_metric(Metric("cond_acc", "conditional accuracy", False, {"samples", "labels"}, feature_space_metrics,
                       table=True, scale="fraction"))
register_metric(Metric("diverged_frac", "diverged fraction", True, {"samples"}, diverged_fraction, min_samples=0,
                       always=True))

__all__ = ["feature_space_metrics", "trajectory_rmse", "diverged_fraction"]
