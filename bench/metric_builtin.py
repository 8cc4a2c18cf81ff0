"""The built-in metrics: FID, KID and conditional accuracy (one computation in the model's FID feature space),
trajectory RMSE (against the exact ODE solution) and the diverged fraction (every cell).

Every metric reads the cell's per-sample quantities (bench/cell_data.py), never all its samples: a cell run in
shards (bench/shard.py) computed them while sampling, in one feature pass per sample. FID and KID are the
data-space ones of bench/metrics.py for 'data' models (gmm2d), an image classifier's (digits, mnist-unet:
bench/fidelity.py; the same pass gives the classifier's predictions for the conditional accuracy), and
InceptionV3's for hub image models (bench/inception.py); each needs 2 finite samples, the others 1.
"""
from __future__ import annotations

import math

import torch

from models.classifier import CLASSIFIERS

from .metric import Metric, register_metric
from .metrics import data_space_metrics


def feature_space_metrics(data) -> dict:
    """{'fid', 'kid'} (and 'cond_acc' for image-classifier models) of the cell's finite samples, from their
    features (one feature pass per sample, made while sampling when the cell ran in shards)."""
    model, spec, n = data.model, data.spec, data.n_finite
    kind = model.feature_extractor
    if n < 2:
        out = {}
    elif kind == "data":
        out = data_space_metrics(model, data.features(), spec.kid_subsets)
    elif kind == "inception-v3-compat":
        from .inception import inception_metrics
        out = inception_metrics(model, None, inception_weights=spec.inception_weights or None,
                                fid_stats=spec.fid_stats or None, reference=model.fid_reference,
                                cache_dir=data.cache_dir, kid_subsets_n=spec.kid_subsets, feats=data.features())
    else:
        from .fidelity import classifier_fid_kid
        out = classifier_fid_kid(model, data.features(), data.reference_features(), spec.kid_subsets)
    predicted = data.predictions() if kind in CLASSIFIERS and data.labels is not None and n > 0 else None
    if predicted is not None:
        out["cond_acc"] = float((torch.from_numpy(predicted) == data.labels).double().mean())
    return out


def trajectory_rmse(data) -> dict:
    """RMSE (over samples and coordinates) of the first k samples (those of them that are finite) from the exact
    ODE solution of their x_T."""
    err = data.reference_errors()
    okk = data.ok[:len(err)].numpy()
    if okk.sum() < 1:
        return {}
    dim = math.prod(data.model.shape)
    return {"traj_rmse": math.sqrt(float(err[okk].sum()) / (int(okk.sum()) * dim))}


def diverged_fraction(data) -> dict:
    return {"diverged_frac": float(1 - data.ok.double().mean())}


register_metric(Metric("fid", "FID", True, {"features"}, feature_space_metrics, table=True))
register_metric(Metric("kid", "KID", True, {"features"}, feature_space_metrics, scale="small"))
register_metric(Metric("traj_rmse", "trajectory RMSE", True, {"reference_solution"}, trajectory_rmse,
                       table=True, scale="small"))
register_metric(Metric("cond_acc", "conditional accuracy", False, {"features", "labels"}, feature_space_metrics,
                       table=True, scale="fraction"))
register_metric(Metric("diverged_frac", "diverged fraction", True, set(), diverged_fraction, min_samples=0,
                       always=True))

__all__ = ["feature_space_metrics", "trajectory_rmse", "diverged_fraction"]
