"""Consistency-model multistep sampling (Song et al. 2023, Alg. 1; spec core-solvers-consistency-checkpoints.md 3.2).

The model's x0-prediction is taken as the consistency function f(x, sigma) (for a consistency checkpoint it is
c_skip x + c_out F(...), clamped: models/hub.py). From x = sigma_max z:
    x0 = f(x, sigma_k);   x = x0 + sqrt(sigma_{k+1}^2 - sigma_min^2) z_k      (VE; last step: return x0)
One NFE a step. On a VP model the re-noising is alpha_{k+1} x0 + sigma_{k+1} z_k (the forward process).
"""
from __future__ import annotations

import torch

from .denoiser import bcast, gaussian_like
from .grids import make_grid
from .registry import Solver, register_solver


def consistency_grid(schedule, nfe: int) -> torch.Tensor:
    """diffusers' CMStochasticIterativeScheduler.set_timesteps(nfe) on the model's Karras index grid of N points:
    indices k (N // nfe), k = 0..nfe-1, sigma(i) = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho,
    then sigma_min appended (so NFE = len(grid) - 1)."""
    n_idx, rho = schedule.consistency_steps, schedule.rho
    if nfe > n_idx:
        from .options import SpecError
        raise SpecError(f"NFE {nfe} exceeds this consistency model's {n_idx}-point sigma grid")
    ramp = torch.arange(nfe, dtype=torch.float64) * (n_idx // nfe) / (n_idx - 1)
    lo, hi = schedule.t_min ** (1 / rho), schedule.T ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.tensor([schedule.t_min], dtype=torch.float64)])


@register_solver("cm-multistep")
class ConsistencyMultistep(Solver):
    """Consistency-model multistep sampling (Song et al. 2023, Alg. 1): denoise with f, re-noise, 1 NFE a step.

    Grid: on a consistency checkpoint, diffusers' CMStochasticIterativeScheduler timesteps for the NFE (its
    `num_train_timesteps`-point Karras grid); elsewhere (any diffusion model's x0 as f) the `karras` grid or
    `grid=`. Stochastic: z_k comes from the runner's generator.
    """

    order = 1
    stochastic = True
    default_grid = "karras"
    consistency_sampler = True   # meant for consistency models (none is embedded: the standard suite leaves it out)

    def grid_for(self, schedule, nfe: int) -> torch.Tensor:
        if getattr(schedule, "consistency_steps", None) and "grid" not in self.given:
            return consistency_grid(schedule, nfe)
        return make_grid(self.grid, schedule, self.steps_for(nfe), rho=self.rho)

    def sample(self, denoiser, x_T, grid, generator=None):
        sched, x = denoiser.schedule, x_T
        ve = sched.kind == "ve"
        for k in range(len(grid) - 1):
            x0 = denoiser.x0(x, grid[k])
            if k == len(grid) - 2:
                return x0
            t = grid[k + 1]
            z = gaussian_like(x, generator)
            if ve:   # the reference's noise level: sqrt(sigma_next^2 - sigma_min^2)
                x = x0 + bcast(torch.sqrt(torch.clamp(sched.sigma(t) ** 2 - sched.t_min ** 2, min=0)), x) * z
            else:
                x = bcast(sched.alpha(t), x) * x0 + bcast(sched.sigma(t), x) * z
        return x
