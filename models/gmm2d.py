"""gmm2d: an exact oracle model. Data is a 2-D Gaussian mixture; the denoiser is the exact posterior mean.

Under x_t = alpha x0 + sigma eps the marginal is sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I) and
E[x0 | x_t] = sum_k gamma_k(x_t) [mu_k + alpha S_k C_k^{-1} (x_t - alpha mu_k)],  C_k = alpha^2 S_k + sigma^2 I,
with gamma_k the component responsibilities. There is no model error: every difference from the data
distribution is the solver's. The formula holds for any alpha and sigma: with schedule=rectified-flow
(alpha = 1 - t, sigma = t) it is the exact flow model, whose velocity (prediction=flow) is eps - x0.
"""
from __future__ import annotations

import math

import torch

from solvers.options import SpecError
from solvers.schedules import SCHEDULES

from .base import DiffusionModel, Reference, register_model

# 9 components: a ring of 8 with unequal weights, radii and anisotropic covariances, plus a broad centre.
_ANGLES = [2 * math.pi * k / 8 for k in range(8)]
_MEANS = [[1.8 * math.cos(a) * (1.0 + 0.15 * (k % 3)), 1.8 * math.sin(a) * (1.0 + 0.15 * (k % 3))]
          for k, a in enumerate(_ANGLES)] + [[0.0, 0.0]]
_WEIGHTS = [0.16, 0.06, 0.12, 0.09, 0.14, 0.05, 0.11, 0.08, 0.19]


def _covariances():
    covs = []
    for k in range(9):
        a = _ANGLES[k] if k < 8 else 0.3
        s1, s2 = (0.08 + 0.04 * (k % 4), 0.03 + 0.02 * (k % 3)) if k < 8 else (0.35, 0.2)
        R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
        covs.append(R @ torch.diag(torch.tensor([s1 ** 2 * 4, s2 ** 2 * 4], dtype=torch.float64)) @ R.T)
    return torch.stack(covs)


class GMM2D(DiffusionModel):
    shape = (2,)
    feature_extractor = "data"
    activation_bytes_per_sample = 4_096   # (N, 9, 2, 2) float64 posterior terms (measured ~1.6 kB, kept above)

    def __init__(self, schedule: str = "vp-discrete", prediction: str = "x0"):
        self.schedule = SCHEDULES[schedule]()
        self.prediction = prediction
        self.means = torch.tensor(_MEANS, dtype=torch.float64)
        self.weights = torch.tensor(_WEIGHTS, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.covs = _covariances()

    def posterior_mean(self, x, t):
        """E[x0 | x_t = x] in float64; t is (N,) continuous time."""
        xd = x.to(torch.float64)
        a = self.schedule.alpha(t).to(xd.device).view(-1, 1, 1, 1)
        s = self.schedule.sigma(t).to(xd.device).view(-1, 1, 1, 1)
        mu, S = self.means.to(xd.device), self.covs.to(xd.device)
        eye = torch.eye(2, dtype=torch.float64, device=xd.device)
        C = a ** 2 * S + s ** 2 * eye                                  # (N, K, 2, 2)
        diff = xd[:, None, :] - a[..., 0] * mu                          # (N, K, 2)
        sol = torch.linalg.solve(C, diff.unsqueeze(-1)).squeeze(-1)     # C^{-1} (x - alpha mu)
        logdet = torch.logdet(C)
        logp = torch.log(self.weights.to(xd.device)) - 0.5 * (diff * sol).sum(-1) - 0.5 * logdet
        gamma = torch.softmax(logp, dim=1)                              # (N, K)
        post = mu + a[..., 0] * (S @ sol.unsqueeze(-1)).squeeze(-1)     # (N, K, 2)
        return (gamma.unsqueeze(-1) * post).sum(1)

    def forward(self, x, t, y=None):
        x0 = self.posterior_mean(x, t)
        a = self.schedule.alpha(t).to(x.device).view(-1, 1)
        s = self.schedule.sigma(t).to(x.device).view(-1, 1)
        xd = x.to(torch.float64)
        if self.prediction == "x0":
            out = x0
        elif self.prediction == "eps":
            out = (xd - a * x0) / s
        elif self.prediction == "flow":  # rectified flow's velocity eps - x0 (finite at t = 1, where eps = x)
            out = (xd - a * x0) / s - x0
        else:  # v = alpha eps - sigma x0
            out = a * (xd - a * x0) / s - s * x0
        return out.to(x.dtype)

    def sample_data(self, n, generator=None):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, dtype=torch.float64, generator=generator)
        L = torch.linalg.cholesky(self.covs)
        return self.means[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)

    @property
    def reference(self):
        mean = (self.weights[:, None] * self.means).sum(0)
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return Reference(mean=mean, cov=second - torch.outer(mean, mean), sampler=self.sample_data)


@register_model("gmm2d", defaults={"schedule": "vp-discrete", "prediction": "x0"},
                choices={"schedule": tuple(SCHEDULES), "prediction": ("x0", "eps", "v", "flow")})
def gmm2d(schedule="vp-discrete", prediction="x0"):
    """Exact oracle: 2-D mixture of 9 Gaussians, posterior-mean denoiser (options: schedule, prediction)."""
    if prediction == "flow" and schedule != "rectified-flow":
        raise SpecError(f"model 'gmm2d': prediction=flow (the velocity eps - x0) needs schedule=rectified-flow, "
                        f"not {schedule}")
    return GMM2D(schedule, prediction)
