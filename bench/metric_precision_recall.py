"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models"), in each model's FID feature space: the data itself for gmm2d, the digits classifier's
features for digits models, InceptionV3 pool3 features for hub image models with a reference dataset.

Each set of features stands for its manifold: the union of balls centred on its points, each ball's radius the
distance from its centre to the centre's k-th nearest neighbour in the same set (k = 3, the paper's default).
precision is the fraction of generated samples inside the real manifold (are the samples realistic?), recall
the fraction of real samples inside the generated manifold (is all of the data covered?); a point on a ball's
boundary is inside. Both lie in [0, 1], higher is better.

The two sets have equal sizes, as in the paper (a k-NN radius shrinks as its set grows): m = min(finite
samples, real samples), the cell's first m finite samples and a fixed-seed random m of the real ones (gmm2d:
m exact samples, fixed seed). Below k + 1 = 4 samples, or without real features (InceptionV3 scored against
FID statistics only), both are nan. Distances are float64 and computed in blocks of at most `chunk` pairs
(default 2^22: 32 MiB), never all N x M at once; the blocks change a distance in its last bits at most
(the rounding of the matrix products), a score only for a point within that of a ball's boundary.

Computed on demand only: `--metrics fid,precision,recall`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .metric import Metric, register_metric

K = 3                  # the paper's neighbourhood size
PR_CHUNK = 1 << 22     # pairwise distances held at once (float64: 32 MiB)
PR_SEED = 0            # the permutation that picks m real samples out of more


def _as_rows(f, device) -> torch.Tensor:
    t = f.detach() if isinstance(f, torch.Tensor) else torch.as_tensor(np.asarray(f))
    t = t.to(device=device, dtype=torch.float64)
    return t.reshape(t.shape[0], -1)


def _blocks(n_cols: int, chunk: int) -> tuple[int, int]:
    """(rows, cols) of a block of at most `chunk` distances (at least one row and one column)."""
    cols = max(1, min(n_cols, chunk))
    return max(1, chunk // cols), cols


def _sq_dists(a, b, a2, b2) -> torch.Tensor:
    """Squared Euclidean distances (rows of a) x (rows of b), given the rows' squared norms."""
    return (a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)).clamp_(min=0)


def knn_radii(f, k: int = K, chunk: int = PR_CHUNK) -> torch.Tensor:
    """Squared distance from each row of f (n, d) to its k-th nearest other row (itself excluded), n > k."""
    f = _as_rows(f, f.device if isinstance(f, torch.Tensor) else "cpu")
    n = f.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii with k = {k} need more than {k} points, got {n}")
    f2 = (f * f).sum(1)
    rows, cols = _blocks(n, chunk)
    out = torch.empty(n, dtype=torch.float64, device=f.device)
    for i in range(0, n, rows):
        a, best = f[i:i + rows], None
        for j in range(0, n, cols):
            d = _sq_dists(a, f[j:j + cols], f2[i:i + rows], f2[j:j + cols])
            lo, hi = max(i, j), min(i + a.shape[0], j + d.shape[1])
            if lo < hi:   # the block holds some rows' distance to themselves: never their own neighbour
                idx = torch.arange(lo, hi, device=f.device)
                d[idx - i, idx - j] = math.inf
            cand = d if best is None else torch.cat([best, d], 1)
            best = cand.topk(min(k, cand.shape[1]), dim=1, largest=False).values   # sorted, smallest first
        out[i:i + rows] = best[:, k - 1]
    return out


def inside_balls(queries, centres, radii2: torch.Tensor, chunk: int = PR_CHUNK) -> torch.Tensor:
    """(n_queries,) bool: whether each query row lies in at least one ball (centre, squared radius)."""
    device = radii2.device
    q, c = _as_rows(queries, device), _as_rows(centres, device)
    q2, c2 = (q * q).sum(1), (c * c).sum(1)
    rows, cols = _blocks(c.shape[0], chunk)
    out = torch.zeros(q.shape[0], dtype=torch.bool, device=device)
    for i in range(0, q.shape[0], rows):
        hit = out[i:i + rows]
        for j in range(0, c.shape[0], cols):
            hit |= (_sq_dists(q[i:i + rows], c[j:j + cols], q2[i:i + rows], c2[j:j + cols])
                    <= radii2[None, j:j + cols]).any(1)
            if bool(hit.all()):
                break
    return out


def precision_recall(real, fake, k: int = K, chunk: int = PR_CHUNK, device: str = "cpu") -> tuple[float, float]:
    """Improved precision and recall of generated features `fake` (n, d) against real features `real` (m, d),
    both sets taken as given (each needs more than k points)."""
    r, g = _as_rows(real, device), _as_rows(fake, device)
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"real features have {r.shape[1]} dimensions, generated ones {g.shape[1]}")
    precision = inside_balls(g, r, knn_radii(r, k, chunk), chunk).double().mean()
    recall = inside_balls(r, g, knn_radii(g, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


def equal_sets(real: np.ndarray, fake: np.ndarray, seed: int = PR_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(real, fake) cut to m = min(sizes) rows each: fake's first m, a fixed-seed random m of real."""
    m = min(len(real), len(fake))
    if len(real) > m:
        real = real[np.sort(np.random.RandomState(seed).permutation(len(real))[:m])]
    return real, fake[:m]


def precision_recall_metrics(data) -> dict:
    """{'precision', 'recall'} of a cell's finite samples in its model's FID feature space (nothing, so nan,
    where the features or the real ones are not available, or with k or fewer samples)."""
    real = data.reference_features()
    fake = data.features() if real is not None else None
    if fake is None or real is None or min(len(fake), len(real)) <= K:
        return {}
    real, fake = equal_sets(np.asarray(real), np.asarray(fake))
    dev = str(data.spec.device)
    device = dev if dev.startswith("cuda") and torch.cuda.is_available() else "cpu"
    p, r = precision_recall(real, fake, K, PR_CHUNK, device)
    return {"precision": p, "recall": r}


register_metric(Metric("precision", "precision (k-NN, k = 3)", False, {"features"}, precision_recall_metrics,
                       min_samples=K + 1, table=True, scale="fraction"))
register_metric(Metric("recall", "recall (k-NN, k = 3)", False, {"features"}, precision_recall_metrics,
                       min_samples=K + 1, table=True, scale="fraction"))
