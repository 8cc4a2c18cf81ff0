"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithms 1-2), deterministic.

They integrate dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ (EDM eq. 3 with s(t) = 1) in the scaled variables
x~ = x / alpha, sigma~ = sigma / alpha = e^{-lambda}, so they run on VP and VE models alike.
"""
from __future__ import annotations

from .grids import ends_at_data, sigmas_after
from .plan import Plan
from .registry import Solver, register_solver


class _EDM(Solver):
    default_grid = "karras"

    @staticmethod
    def scaled(g, x):
        """In x's dtype, per grid point: alpha and sigma~ = sigma/alpha; per interval: the step in sigma~ (the float64
        difference, cast)."""
        sg = g.sigmas / g.alphas
        return g.like((g.alphas, sg, sg[1:] - sg[:-1]), x)

    @staticmethod
    def _d(denoiser, x_tilde, at, a, sg):
        """dx~/dsigma~ at x~ (1 NFE): at the Denoiser's time, a alpha and sg sigma~ there."""
        x0 = denoiser.x0(a * x_tilde, at)
        return (x_tilde - x0).div_(sg)


@register_solver("euler")
class Euler(_EDM):
    """Euler in sigma~ (EDM Alg. 1 without churn); identical to DDIM eta=0 on the same grid."""

    nominal_order = 1

    def sample(self, denoiser, x_T, plan, generator=None):
        g = plan.on(denoiser.schedule)
        (a, sg, dsg), at = self.scaled(g, x_T), g.times(x_T)
        x = x_T / a[0]
        for i in range(plan.steps):    # x += dsg d (EDM Alg. 2 line 6), in place on this loop's own tensors
            x = x.add_(self._d(denoiser, x, at[i], a[i], sg[i]).mul_(dsg[i]))
        return a[-1] * x


@register_solver("heun")
class Heun(_EDM):
    """EDM Heun (2nd order, 2 NFE a step); a step onto sigma=0, or an odd budget's last step, is Euler."""

    nominal_order = 2
    min_nfe = 2
    nfe_per_step = 2

    def plan(self, schedule, nfe):
        """Heun steps of 2 NFE; an odd budget's last step is Euler (EDM: 2N - 1). A grid ending at sigma = 0 ends
        with a 1-NFE Euler jump there, and Heun steps before it (one of them Euler when the budget is even)."""
        self.require_nfe(nfe)
        to_data = ends_at_data(self.grid, schedule)
        grid = self.time_grid(schedule, nfe // 2 + 1 if to_data else (nfe + 1) // 2)
        evals, left = [], nfe
        for i in range(len(grid) - 1):
            later = len(grid) - 2 - i               # intervals after this one, 1 NFE each at least
            heun = not (to_data and i == len(grid) - 2) and left - 2 >= later
            evals.append(2 if heun else 1)
            left -= evals[-1]
        return Plan(grid, tuple(evals))

    def plan_on(self, schedule, grid):
        return Plan(grid, tuple(1 if s == 0 else 2 for s in sigmas_after(schedule, grid)))

    def sample(self, denoiser, x_T, plan, generator=None):
        g = plan.on(denoiser.schedule)
        (a, sg, dsg), at = self.scaled(g, x_T), g.times(x_T)
        x = x_T / a[0]
        for i in range(plan.steps):    # in place on this loop's own tensors (x, d)
            d = self._d(denoiser, x, at[i], a[i], sg[i])
            if plan.evals[i] == 1:
                x = x.add_(d.mul_(dsg[i]))                                      # Alg. 2 line 6 (Euler)
                continue
            d2 = self._d(denoiser, x + dsg[i] * d, at[i + 1], a[i + 1], sg[i + 1])  # Alg. 2 lines 6 and 9
            x = x.add_(d.add_(d2).mul_(dsg[i]).div_(2))                         # Alg. 2 line 8 (trapezoid)
        return a[-1] * x
