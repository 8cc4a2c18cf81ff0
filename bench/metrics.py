"""Sample-quality metrics of a cell: Frechet distance, KID, trajectory error, divergence."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}) (the FID formula, in any feature space)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    covmean = linalg.sqrtm(c1 @ c2)
    if not np.isfinite(covmean).all():
        eps = np.eye(c1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((c1 + eps) @ (c2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def moments(x: torch.Tensor):
    f = x.reshape(x.shape[0], -1).to(torch.float64).cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def kid(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b/d + 1)^3 (the KID kernel)."""
    a = x.reshape(x.shape[0], -1).to(torch.float64)
    b = y.reshape(y.shape[0], -1).to(torch.float64)
    d = a.shape[1]
    kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    m, n = a.shape[0], b.shape[0]
    if m < 2 or n < 2:
        return math.nan
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def finite_mask(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)


def traj_rmse(x: torch.Tensor, x_ref: torch.Tensor) -> float:
    """Root-mean-square (over samples and coordinates) distance from the exact ODE solution."""
    return float(torch.sqrt(((x.to(torch.float64) - x_ref.to(torch.float64)) ** 2).mean()))


_REF_SAMPLES: dict = {}


def data_space_metrics(model, x: torch.Tensor) -> dict:
    """FID/KID in the data space for models whose feature space is the data (gmm2d): Frechet distance
    to the exact mixture moments, KID against 2,000 exact reference samples (fixed seed)."""
    ref = model.reference
    mu, cov = moments(x)
    if ref.mean is not None:
        fid = frechet_distance(mu, cov, ref.mean.numpy(), ref.cov.numpy())
    else:
        fid = frechet_distance(mu, cov, *moments(ref.samples))
    key = model.spec
    if key not in _REF_SAMPLES:
        if ref.samples is not None:
            _REF_SAMPLES[key] = ref.samples
        else:
            _REF_SAMPLES[key] = ref.sample(2000, torch.Generator().manual_seed(12345))
    return {"fid": fid, "kid": kid(x, _REF_SAMPLES[key])}
