"""A plan in the variance-exploding view (docs/solvers.md#the-sigma-view): sigma~ = sigma / alpha = e^{-lambda},
x~ = x / alpha = x0 + sigma~ eps, and the denoiser D(x~; sigma~) = x0(alpha x~, t(sigma~)).

k-diffusion, EDM, Restart and diff-sampler write their samplers in these variables; any such recurrence runs
unchanged on a VP model by mapping the state in (x~ = x_T / alpha_0) and out (x = alpha_M x~). Noise of standard
deviation s added to x~ is alpha s in VP units. sigma~ is 0 at the data point (a grid ending at t = 0).
"""
from __future__ import annotations

import math

import torch

from .schedules import F64, as_t


class SigmaView:
    """sigma~ at every grid point (python floats, float64), D at a grid point or at any sigma~ (1 NFE each)."""

    def __init__(self, denoiser, plan, x: torch.Tensor):
        g = plan.on(denoiser.schedule)
        self.denoiser, self.schedule = denoiser, denoiser.schedule
        self.sigmas = (g.sigmas / g.alphas).tolist()
        self.alphas = g.like(g.alphas, x)
        self.times = g.times(x)
        self.sigma_max = float(torch.exp(-self.schedule.lambda_(as_t(self.schedule.T))))   # sigma~ at T: the top

    def start(self, x_T: torch.Tensor) -> torch.Tensor:
        return x_T / self.alphas[0]

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.alphas[-1] * x

    def D(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """D(x~; sigma~_i) at grid point i."""
        return self.denoiser.x0(self.alphas[i] * x, self.times[i])

    def D_at(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x~; sigma~) at a level off the grid (a midpoint, a churned or restarted level)."""
        t = self.schedule.t_of_lambda(torch.tensor(-math.log(sigma), dtype=F64))
        alpha = self.schedule.alpha(t).to(dtype=x.dtype, device=x.device)
        return self.denoiser.x0(alpha * x, t)

    def d(self, x: torch.Tensor, D: torch.Tensor, sigma: float) -> torch.Tensor:
        """The probability-flow ODE's dx~/dsigma~ = (x~ - D) / sigma~ (EDM eq. 3, k-diffusion `to_d`)."""
        return (x - D) / sigma


def ancestral_split(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): a step sigma_from -> sigma_to as a deterministic move to sigma_down and fresh noise
    of standard deviation sigma_up (k-diffusion `get_ancestral_step`; eta = 1 is DDPM's posterior variance)."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
    return math.sqrt(sigma_to ** 2 - up ** 2), up
