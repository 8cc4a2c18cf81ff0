"""DDIM (Song et al. 2021), deterministic (eta = 0) or stochastic."""
from __future__ import annotations

import torch

from .denoiser import bcast, gaussian_like
from .exponential import data_step
from .registry import Solver, register_solver


@register_solver("ddim")
class DDIM(Solver):
    """DDIM; eta=0 is the probability-flow ODE's first-order exponential integrator (= DPM-Solver-1)."""
    family = "exponential integrator"

    nominal_order = 1
    default_grid = "time_uniform"
    defaults = {"eta": 0.0}
    ranges = {"eta": (0, 1)}      # 0: deterministic (the PF-ODE), 1: DDPM's posterior variance

    @property
    def stochastic(self):
        return self.eta > 0

    @property
    def alpha_zero_start(self):
        """Deterministic DDIM steps from alpha = 0 (h = inf: x_t = t x + (1 - t) x0 on a rectified flow)."""
        return self.eta == 0

    def sample(self, denoiser, x_T, plan, generator=None):
        g, x = plan.on(denoiser.schedule), x_T
        for i, at in enumerate(g.times(x_T)[:-1]):
            iv = g.interval(i)
            pred = denoiser.predict(x, at)
            if self.eta == 0 or iv.to_data:
                x = data_step(iv, x, pred.x0)
                continue
            # DDIM eq. 12 written in sigma~ = sigma/alpha (identical to k-diffusion's euler_ancestral):
            # sigma_up = eta sqrt(s~_t^2 (s~_s^2 - s~_t^2) / s~_s^2), sigma_down = sqrt(s~_t^2 - sigma_up^2)
            sg_s, sg_t = iv.sigma_s / iv.alpha_s, iv.sigma_t / iv.alpha_t
            up = torch.minimum(sg_t, self.eta * torch.sqrt(sg_t ** 2 * (sg_s ** 2 - sg_t ** 2) / sg_s ** 2))
            down = torch.sqrt(sg_t ** 2 - up ** 2)
            z = gaussian_like(x, generator)
            x_tilde = pred.x0 + bcast(down / sg_s, x) * (x / bcast(iv.alpha_s, x) - pred.x0) + bcast(up, x) * z
            x = bcast(iv.alpha_t, x) * x_tilde
        return x
