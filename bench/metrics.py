"""The numeric core of nfebench's sample-quality metrics: the Frechet distance, moments, KID, trajectory error.

Every FID, KID and moment in nfebench is computed here (bench/inception.py, bench/nfe_changes.py and the
registered metrics, bench/metric_builtin.py, call these; only the digits classifier's FID and KID come from
torch-fidelity's own code, bench/fidelity.py). The Frechet distance comes in two forms, both kept because each is what committed
results were computed with: `frechet_distance` (a general matrix square root, scipy's sqrtm: data-space FID) and
`FrechetToReference` (against one fixed reference, by symmetric eigendecompositions: InceptionV3 FID, one pair
at a time, and the paired bootstrap of bench/nfe_changes.py, batched in torch).

Every metric's working memory is flat in the number of samples N beyond the samples themselves: moments are
chunked sums (never an N x D float64 copy of more than MOMENT_CHUNK_BYTES at a time) and KID is always the
subset estimator (kernels of at most KID_SUBSET_SIZE^2, never N x N).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from scipy import linalg

KID_SUBSETS = 100          # torch-fidelity's defaults: 100 subsets of 1000
KID_SUBSET_SIZE = 1000
KID_REFERENCE_SAMPLES = 2000   # exact reference samples of a data-space model without its own (fixed seed)
MOMENT_CHUNK_BYTES = 1 << 27   # 128 MiB of float64 features per chunk of the moment sums


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


class FrechetToReference:
    """The Frechet distance of moments (mu, C) to one fixed reference (mu_r, R), for symmetric PSD C and R:
    ||mu - mu_r||^2 + tr(C) + tr(R) - 2 tr((C R)^{1/2}), with tr((C R)^{1/2}) = sum sqrt(eig(S C S)) and
    S = R^{1/2} computed once. `distance` scores one (mu, C) pair in numpy (two symmetric eigendecompositions
    in all, several times faster at 2048 dimensions than a general matrix square root, and the same value);
    calling the object scores a batch in torch (one batched symmetric eigendecomposition per replicate)."""

    def __init__(self, mu, cov):
        cov = np.asarray(cov, np.float64)
        cov = (cov + cov.T) / 2
        w, v = np.linalg.eigh(cov)
        self.mu, self.tr = torch.from_numpy(np.asarray(mu, np.float64)), float(np.trace(cov))
        self.sqrt = torch.from_numpy((v * np.sqrt(np.clip(w, 0, None))) @ v.T)

    def distance(self, mu, cov) -> float:
        """The Frechet distance of one (mu (d,), cov (d, d)) to the reference, in float64 numpy."""
        mu, s = np.asarray(mu, np.float64), np.asarray(cov, np.float64)
        s = (s + s.T) / 2
        r = self.sqrt.numpy()
        m = r @ s @ r
        ev = np.linalg.eigvalsh((m + m.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
        diff = mu - self.mu.numpy()
        return float(diff @ diff + np.trace(s) + self.tr - 2.0 * tr_covmean)

    def from_parts(self, mu: torch.Tensor, tr_cov: torch.Tensor, scs: torch.Tensor) -> torch.Tensor:
        """FID from mu (B, d), tr(C) (B,) and S C S (B, d, d) -> (B,)."""
        ev = torch.linalg.eigvalsh(scs).clamp(min=0)  # reads one triangle: rounding asymmetry is harmless
        return ((mu - self.mu) ** 2).sum(-1) + tr_cov + self.tr - 2 * ev.sqrt().sum(-1)

    def __call__(self, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """mu (B, d), cov (B, d, d), float64 -> FID (B,)."""
        return self.from_parts(mu, cov.diagonal(dim1=-2, dim2=-1).sum(-1), self.sqrt @ cov @ self.sqrt)


def moment_chunk_rows(dim: int) -> int:
    return max(1, MOMENT_CHUNK_BYTES // (8 * max(1, dim)))


def moments(x):
    """Mean and covariance (np.cov's, ddof 1) of samples or features (an array or tensor, flattened to (N, D)),
    in float64, from chunks of `moment_chunk_rows(D)` rows: never more than MOMENT_CHUNK_BYTES of float64
    copies. With N up to one chunk the values are np.mean's and np.cov's bit for bit; beyond, two passes of
    chunked sums (only the summation order differs, in the last bits)."""
    f = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    f = f.reshape(f.shape[0], -1)
    n, dim = f.shape
    rows = moment_chunk_rows(dim)

    def chunk(i):
        return f[i:i + rows].to(torch.float64).cpu().numpy()

    if n <= rows:
        c = chunk(0)
        return c.mean(0), np.cov(c, rowvar=False)
    mu = sum(chunk(i).sum(0) for i in range(0, n, rows)) / n
    cov = np.zeros((dim, dim))
    for i in range(0, n, rows):
        c = chunk(i) - mu
        cov += c.T @ c
    cov *= np.true_divide(1, n - 1)
    return mu, cov.squeeze() if dim == 1 else cov


def _features(f, device) -> torch.Tensor:
    """(N, D) float64 tensor on `device` of features given as an array or a tensor of any per-sample shape."""
    if isinstance(f, torch.Tensor):
        t = f.detach().to(device=device, dtype=torch.float64)
    else:
        t = torch.as_tensor(np.asarray(f), dtype=torch.float64, device=device)
    return t.reshape(t.shape[0], -1)


def mmd2_cubic(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of two float64 (m, d), (n, d) sets with the cubic polynomial kernel k(a, b) = (a.b/d + 1)^3
    (the KID kernel): the core of `kid`, one subset pair."""
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


KID_BLOCK = 1 << 22   # kernel entries held at once by the whole-set KID (float64: 32 MiB)
_KID_YY: dict = {}     # the reference's kernel sums per subset draw (every cell of a model shares them)


def kid(f1, f2, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
        device: str = "cpu") -> float:
    """KID: mean over `subsets` random subset pairs of the unbiased MMD^2 with kernel (a.b/d + 1)^3 (the
    torch-fidelity / Binkowski et al. estimator, 100 subsets of 1000), the subset size capped by the smaller
    set; the subsets are drawn by numpy's RandomState(seed) as torch-fidelity draws them, so the value is
    deterministic. Float64 throughout. Two ways to the same sums, whichever costs fewer operations: one subset
    pair at a time (three subset_size^2 kernels), or the kernels of the whole sets once, in blocks of KID_BLOCK
    entries, with every subset's sum as u^T K v for its 0/1 indicator vectors (one matrix product for all
    subsets; the reference's part cached). Memory is flat in the sizes of f1 and f2 either way."""
    a, b = _features(f1, device), _features(f2, device)
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    m = min(subset_size, n1, n2)
    if m < 2:
        return math.nan
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(n1, m, replace=False), rng.choice(n2, m, replace=False)) for _ in range(subsets)]
    if kid_whole_sets(n1, n2, d, subsets, m):
        return _kid_whole(a, b, draws, m, (n1, n2, m, subsets, seed))
    vals = [mmd2_cubic(a[torch.as_tensor(i, device=device)], b[torch.as_tensor(j, device=device)])
            for i, j in draws]
    return float(np.mean(vals))


KID_ENTRY_COST = 10   # the elementwise work on one kernel entry (scale, cube, sums), in multiply-adds


def kid_whole_sets(n1: int, n2: int, d: int, subsets: int, m: int) -> bool:
    """Whether `kid` takes the whole-set kernels (fewer operations than subset pair by subset pair): a kernel
    entry costs d multiply-adds and KID_ENTRY_COST more; the whole sets' entries also feed one product each
    with the subsets' indicator vectors."""
    whole = (n1 * n1 + n1 * n2 + n2 * n2) * (d + KID_ENTRY_COST + subsets)
    return whole < 3 * subsets * m * m * (d + KID_ENTRY_COST)


def _indicators(draws, n: int, device) -> torch.Tensor:
    u = torch.zeros(n, len(draws), dtype=torch.float64, device=device)
    for k, idx in enumerate(draws):
        u[torch.as_tensor(idx, device=device), k] = 1.0
    return u


def _kernel_sums(a, b, u, v) -> torch.Tensor:
    """(subsets,) sums u_k^T K v_k of the cubic kernel K = (a b^T / d + 1)^3, K built KID_BLOCK entries at a time."""
    d, out = a.shape[1], torch.zeros(u.shape[1], dtype=torch.float64, device=a.device)
    rows = max(1, KID_BLOCK // max(1, b.shape[0]))
    for i in range(0, a.shape[0], rows):
        k = (a[i:i + rows] @ b.T / d + 1) ** 3
        out += (u[i:i + rows] * (k @ v)).sum(0)
    return out


def _kid_whole(a, b, draws, m: int, draw_key) -> float:
    """KID from whole-set kernels: sum over a subset's off-diagonal pairs = u^T K u - u . diag(K)."""
    d = a.shape[1]
    u, v = _indicators([i for i, _ in draws], a.shape[0], a.device), _indicators([j for _, j in draws],
                                                                                 b.shape[0], b.device)
    sxx = _kernel_sums(a, a, u, u) - u.T @ (((a * a).sum(1) / d + 1) ** 3)
    key = (hashlib.sha1(b.cpu().numpy().tobytes()).hexdigest(), draw_key)
    if key not in _KID_YY:
        if len(_KID_YY) >= 8:
            _KID_YY.pop(next(iter(_KID_YY)))
        _KID_YY[key] = _kernel_sums(b, b, v, v) - v.T @ (((b * b).sum(1) / d + 1) ** 3)
    syy = _KID_YY[key].to(a.device)
    sxy = _kernel_sums(a, b, u, v)
    mmd = (sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)
    return float(mmd.mean())


def finite_mask(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)


def traj_rmse(x: torch.Tensor, x_ref: torch.Tensor) -> float:
    """Root-mean-square (over samples and coordinates) distance from the exact ODE solution."""
    return float(torch.sqrt(((x.to(torch.float64) - x_ref.to(torch.float64)) ** 2).mean()))


_REF_SAMPLES: dict = {}


def data_space_metrics(model, x: torch.Tensor, kid_subsets: int = KID_SUBSETS) -> dict:
    """FID/KID in the data space for models whose feature space is the data (gmm2d): Frechet distance
    to the exact mixture moments; KID against 2,000 exact reference samples (fixed seed), the mean over
    `kid_subsets` subsets of min(1000, N, 2000) samples (`kid`, the estimator of torch-fidelity)."""
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
            _REF_SAMPLES[key] = ref.sample(KID_REFERENCE_SAMPLES, torch.Generator().manual_seed(12345))
    return {"fid": fid, "kid": kid(x, _REF_SAMPLES[key], subsets=kid_subsets)}
