"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithms 1-2), deterministic.

They integrate dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ (EDM eq. 3 with s(t) = 1) in the scaled variables
x~ = x / alpha, sigma~ = sigma / alpha = e^{-lambda}, so they run on VP and VE models alike.
"""
from __future__ import annotations

from .denoiser import bcast
from .grids import ends_at_data
from .plan import Plan
from .registry import Solver, register_solver


def _tilde(sched, t):
    return sched.sigma(t) / sched.alpha(t), sched.alpha(t)


class _EDM(Solver):
    default_grid = "karras"

    def _d(self, denoiser, x_tilde, t, a):
        """dx~/dsigma~ at x~ (1 NFE)."""
        sched = denoiser.schedule
        s = sched.sigma(t) / a
        x0 = denoiser.x0(bcast(a, x_tilde) * x_tilde, t)
        return (x_tilde - x0) / bcast(s, x_tilde)


@register_solver("euler")
class Euler(_EDM):
    """Euler in sigma~ (EDM Alg. 1 without churn); identical to DDIM eta=0 on the same grid."""

    nominal_order = 1

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, grid = denoiser.schedule, plan.grid
        sg_s, a_s = _tilde(sched, grid[0])
        x = x_T / bcast(a_s, x_T)
        for s, t in zip(grid[:-1], grid[1:]):
            sg_s, a_s = _tilde(sched, s)
            sg_t, a_t = _tilde(sched, t)
            x = x + bcast(sg_t - sg_s, x) * self._d(denoiser, x, s, a_s)  # EDM Alg. 2 line 6
        return bcast(a_t, x) * x


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
        return Plan(grid, tuple(1 if float(schedule.sigma(t)) == 0 else 2 for t in grid[1:]))

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, grid = denoiser.schedule, plan.grid
        _, a_0 = _tilde(sched, grid[0])
        x = x_T / bcast(a_0, x_T)
        a_t = a_0
        for i, (s, t) in enumerate(zip(grid[:-1], grid[1:])):
            sg_s, a_s = _tilde(sched, s)
            sg_t, a_t = _tilde(sched, t)
            d = self._d(denoiser, x, s, a_s)
            x_next = x + bcast(sg_t - sg_s, x) * d                        # Alg. 2 line 6 (Euler)
            if plan.evals[i] == 2:
                d2 = self._d(denoiser, x_next, t, a_t)                    # Alg. 2 line 9
                x_next = x + bcast(sg_t - sg_s, x) * (d + d2) / 2          # Alg. 2 line 8 (trapezoid)
            x = x_next
        return bcast(a_t, x) * x
