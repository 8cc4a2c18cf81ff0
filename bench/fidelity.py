"""FID / KID / conditional accuracy of embedded-model samples through torch-fidelity.

The model names its torch-fidelity feature extractor (`model.feature_extractor`, 'digits-classifier' or
'mnist-classifier': models.classifier.CLASSIFIERS) and its registered reference dataset (`model.fid_reference`,
'digits' or 'mnist'); both are registered by `models.classifier.register_fidelity`. Samples stay in model space
(float (N, 1, S, S) in [-1, 1], S = 8 or 28); they are
clipped to [-1, 1] as saving them as images would, and non-finite samples are dropped (never averaged in).
FID and KID are computed from the classifier's features, one feature pass per sample (made while sampling
when a cell runs in shards, bench/shard.py): FID by torch-fidelity's own formulas (`fid_features_to_statistics`
and `fid_statistics_to_metric`, the moments of float32 features: the value `calculate_metrics` gives, bit for
bit), KID by bench/metrics.py's `kid`, the same estimator on the same subsets as torch-fidelity's (100 subsets
of min(1000, N), RandomState(2020)) in float64, which differs from torch-fidelity's float32 sums by their
rounding (a few 1e-6 relative). torch-fidelity's `calculate_metrics` is used for `fid_floor` only, with its
cache under `cache_dir` (or the user cache dir) in a folder keyed by the extractor's weights sha256.
Nothing touches the network.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from solvers.options import SpecError

from .metrics import KID_SUBSET_SIZE, KID_SUBSETS, kid  # torch-fidelity's defaults: 100 subsets of 1000

TORCH_FIDELITY_SEED = 2020   # torch-fidelity's rng_seed: the KID subsets it draws

DIGITS = "digits-classifier"


def _cache_root(cache_dir: Path | None, sha: str, extractor: str = DIGITS) -> Path:
    base = Path(cache_dir) if cache_dir is not None else \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nfebench"
    return base / "fidelity" / f"{extractor}-{sha[:12]}"


def _calculate(input1, input2, cache_root: Path, kid: bool, n_min: int, kid_subsets: int = KID_SUBSETS,
               extractor: str = DIGITS) -> dict:
    import torch_fidelity

    from .safe_load import patch_torch_fidelity
    patch_torch_fidelity()   # its cache under cache_root is read weights-only; a bad entry is recomputed
    kwargs = dict(input1=input1, input2=input2, feature_extractor=extractor, fid=True, kid=kid,
                  cuda=False, batch_size=1000, save_cpu_ram=True, verbose=False, cache=True,
                  cache_root=str(cache_root), datasets_root=str(cache_root / "datasets"),
                  datasets_download=False)
    if kid:
        kwargs.update(kid_subsets=kid_subsets, kid_subset_size=min(KID_SUBSET_SIZE, n_min))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch_fidelity.calculate_metrics(**kwargs)
    res = {"fid": float(out["frechet_inception_distance"])}
    if kid:
        res["kid"] = float(out["kernel_inception_distance_mean"])
    return res


def _clean(samples: torch.Tensor, labels, shape: tuple = (1, 8, 8)):
    x = samples.detach().to("cpu", torch.float32)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise SpecError(f"classifier metrics need samples of shape (N, {', '.join(map(str, shape))}), "
                        f"got {tuple(samples.shape)}")
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    x = x[ok].clamp(-1.0, 1.0)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()[ok]
    return x, labels


def classifier_fid_kid(model, feats, ref_feats, kid_subsets: int = KID_SUBSETS) -> dict:
    """{'fid', 'kid'} of samples' classifier features (N, 128) against the reference's (M, 128)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from models.classifier import CLASSIFIERS
    if model.feature_extractor not in CLASSIFIERS:
        raise SpecError(f"classifier FID handles the feature extractors {', '.join(CLASSIFIERS)}; "
                        f"model '{model.spec}' names '{model.feature_extractor}'")
    f = torch.as_tensor(np.asarray(feats, np.float32))
    r = torch.as_tensor(np.asarray(ref_feats, np.float32))
    if f.shape[0] < 2:
        return {"fid": math.nan, "kid": math.nan}
    fid = fid_statistics_to_metric(fid_features_to_statistics(f), fid_features_to_statistics(r), False)
    return {"fid": float(fid["frechet_inception_distance"]),
            "kid": kid(f, r, subsets=kid_subsets, subset_size=KID_SUBSET_SIZE, seed=TORCH_FIDELITY_SEED)}


def fid_floor(seed: int = 0) -> float:
    """FID between two disjoint random halves of the real digits (seeded): the floor sample FIDs approach."""
    from models.classifier import register_fidelity
    from models.digits_data import TensorImages, load_digits_tensors

    register_fidelity()
    x, _ = load_digits_tensors()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    half = x.shape[0] // 2
    a, b = TensorImages(x[perm[:half]]), TensorImages(x[perm[half:]])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # two Datasets: nothing cacheable; keep torch-fidelity off ~/.cache
        return _calculate(a, b, Path(tmp), kid=False, n_min=half)["fid"]
