"""The schedule at the times of one plan's grid, computed once per plan (docs/architecture.md#plan).

A solver steps between grid times t_0 > ... > t_M and reads alpha, sigma and lambda there at every step, and
the Denoiser converts between predictions with alpha and sigma at every evaluation. `Plan.on(schedule)` computes
them for the whole grid in one call each, together with the intervals between neighbours (h, phi1), and the
solvers read them instead of interpolating the schedule again at every step and evaluation.

No number changes: the schedules are elementwise (an interpolation, exp, expm1, log, log1p, sin, sqrt and exact
arithmetic), so the value at a time is the same whether it is computed alone or within the grid, and the
Denoiser's alpha and sigma are still computed on the device of the samples (`times`), as it computes them
itself for a time off the grid.
"""
from __future__ import annotations

import torch

from .denoiser import TimeScales
from .exponential import Interval
from .schedules import as_t


class GridSchedule:
    """alpha, sigma, lambda (float64, 0-d each) at every time of `grid`, and the intervals between neighbours.

    `t[i]`, `alpha[i]`, `sigma[i]`, `lam[i]`: grid point i; `interval(i)`: the step t_i -> t_{i+1};
    `times(x)`: every grid time as the Denoiser uses it for x (its dtype and device), computed once per
    dtype and device; `like(values, x)`: a float64 vector over the grid as 0-d coefficients in x's dtype.
    A solver compares a time with `t[i]` by identity (`t is g.t[i]`): a modifier's time (time shift) is
    another tensor, and takes the schedule's own path.
    """

    def __init__(self, schedule, grid):
        grid = as_t(grid)
        self.schedule, self.grid = schedule, grid
        self.alphas, self.sigmas, self.lams = schedule.alpha_sigma_lambda(grid)
        self.t, self.alpha, self.sigma, self.lam = (v.unbind() for v in (grid, self.alphas, self.sigmas, self.lams))
        self.to_data = (self.sigmas == 0).tolist()
        self._intervals = None
        self._times = {}

    def interval(self, i: int) -> Interval:
        """The step t_i -> t_{i+1}. The first time one is asked for, h, phi1 and the first-order coefficients of
        every step are computed at once: Interval's own formulas, on one Interval whose values are vectors."""
        if self._intervals is None:
            at = (self.grid, self.alphas, self.sigmas, self.lams)
            steps = Interval.known(tuple(v[:-1] for v in at), tuple(v[1:] for v in at), to_data=False)
            h, phi1 = steps.h.unbind(), steps.phi1.unbind()
            data, noise = (list(zip(*(c.unbind() for c in coefs))) for coefs in (steps.data_coefs, steps.noise_coefs))
            points = list(zip(self.t, self.alpha, self.sigma, self.lam))
            self._intervals = [Interval.known(points[j], points[j + 1], self.to_data[j + 1], h[j], phi1=phi1[j],
                                              data_coefs=data[j], noise_coefs=noise[j]) for j in range(len(h))]
        return self._intervals[i]

    def times(self, x: torch.Tensor) -> list[TimeScales]:
        """Every grid time for x, as `Denoiser.scales(x, t)` would compute it: on x's device, then in x's dtype."""
        key = (x.dtype, x.device)
        if key not in self._times:
            if x.device == self.grid.device:
                t, alphas, sigmas = self.t, self.alphas, self.sigmas
            else:
                grid = self.grid.to(x.device)
                (alphas, sigmas, _), t = self.schedule.alpha_sigma_lambda(grid), grid.unbind()
            self._times[key] = [TimeScales(*q) for q in zip(t, *self.like((alphas, sigmas), x))]
        return self._times[key]

    @staticmethod
    def like(values, x: torch.Tensor):
        """float64 vectors over the grid (or one vector) as lists of 0-d coefficients in x's dtype on x's device
        (what `bcast` makes of each value)."""
        if isinstance(values, torch.Tensor):
            return values.to(dtype=x.dtype, device=x.device).unbind()
        return [v.to(dtype=x.dtype, device=x.device).unbind() for v in values]
