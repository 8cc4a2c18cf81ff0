"""Plans of solvers that spend two evaluations a step (Heun, DPM-Solver++(2S), DPM-Solver++ SDE)."""
from __future__ import annotations

from .grids import ends_at_data, sigmas_after
from .plan import Plan
from .registry import Solver


class TwoStage(Solver):
    """Steps of 2 NFE; an odd budget's last step is a 1-NFE first-order step (EDM: 2N - 1). A grid ending at
    sigma = 0 ends with a 1-NFE first-order jump there, and 2-NFE steps before it (one of them first order when
    the budget is even). `sample` reads `plan.evals[i]` for which a step is."""

    min_nfe = 2
    nfe_per_step = 2

    def plan(self, schedule, nfe):
        self.require_nfe(nfe)
        to_data = ends_at_data(self.grid, schedule)
        grid = self.time_grid(schedule, nfe // 2 + 1 if to_data else (nfe + 1) // 2)
        evals, left = [], nfe
        for i in range(len(grid) - 1):
            later = len(grid) - 2 - i               # intervals after this one, 1 NFE each at least
            two = not (to_data and i == len(grid) - 2) and left - 2 >= later
            evals.append(2 if two else 1)
            left -= evals[-1]
        return Plan(grid, tuple(evals))

    def plan_on(self, schedule, grid):
        return Plan(grid, tuple(1 if s == 0 else 2 for s in sigmas_after(schedule, grid)))
