"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithms 1-2), deterministic.

They integrate dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ (EDM eq. 3 with s(t) = 1) in the scaled variables
x~ = x / alpha, sigma~ = sigma / alpha = e^{-lambda}, so they run on VP and VE models alike.
"""
from __future__ import annotations

from .denoiser import bcast
from .grids import ends_at_data, make_grid
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

    order = 1

    def sample(self, denoiser, x_T, grid, generator=None):
        sched = denoiser.schedule
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

    order = 2
    min_nfe = 2
    nfe_per_step = 2

    def steps_for(self, nfe):
        super().steps_for(nfe)
        return (nfe + 1) // 2  # 2 NFE per step; an odd budget ends with one Euler step (EDM: 2N - 1)

    def grid_for(self, schedule, nfe):
        if ends_at_data(self.grid, schedule):
            # the last interval is a 1-NFE Euler jump to sigma = 0: Heun steps before it (one of them Euler
            # when the budget is even), so the whole budget is spent
            self.steps_for(nfe)
            return make_grid(self.grid, schedule, nfe // 2 + 1, rho=self.rho)
        return super().grid_for(schedule, nfe)

    def sample(self, denoiser, x_T, grid, generator=None):
        sched = denoiser.schedule
        _, a_0 = _tilde(sched, grid[0])
        x = x_T / bcast(a_0, x_T)
        a_t = a_0
        for i, (s, t) in enumerate(zip(grid[:-1], grid[1:])):
            sg_s, a_s = _tilde(sched, s)
            sg_t, a_t = _tilde(sched, t)
            d = self._d(denoiser, x, s, a_s)
            x_next = x + bcast(sg_t - sg_s, x) * d                        # Alg. 2 line 6 (Euler)
            # the corrector needs 1 NFE more, and every later interval at least 1: where the budget is short the
            # step is Euler (an odd budget's last step; the step before a jump to sigma = 0 for an even one)
            later = len(grid) - 2 - i
            short = denoiser.remaining is not None and denoiser.remaining - 1 < later
            euler_only = float(sg_t) == 0 or short
            if not euler_only:
                d2 = self._d(denoiser, x_next, t, a_t)                    # Alg. 2 line 9
                x_next = x + bcast(sg_t - sg_s, x) * (d + d2) / 2          # Alg. 2 line 8 (trapezoid)
            x = x_next
        return bcast(a_t, x) * x
