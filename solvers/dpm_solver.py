"""Singlestep DPM-Solver (Lu et al. 2022, noise prediction) and DPM-Solver++(2S) (Lu et al. 2022b, data prediction).

A step of order k spends k NFE; a budget K is spent as DPM-Solver-fast does it (as many order-k steps as fit,
then lower orders: `singlestep_orders`). Intermediate points sit at lambda_s + r h with r = 1/2 (order 2) or
r = 1/3, 2/3 (order 3), the 'dpmsolver' solver type. Deviation from the official code on non-logSNR grids:
the intermediate points are always the lambda fractions, not points of a finer grid of the same type.
"""
from __future__ import annotations

from .denoiser import bcast
from .exponential import Interval, data_step, noise_step, singlestep_orders
from .grids import ends_at_data, sigmas_after
from .plan import Plan
from .registry import Solver, register_solver


class _Singlestep(Solver):
    default_grid = "logSNR"
    max_order = 1
    predict_x0 = False

    @property
    def nominal_order(self):
        return self.max_order

    def plan(self, schedule, nfe):
        """Orders spending `nfe` (evals = orders); a grid ending at sigma = 0 ends with a first-order jump to x0."""
        self.require_nfe(nfe)
        if ends_at_data(self.grid, schedule):
            orders = (singlestep_orders(nfe - 1, self.max_order) if nfe > 1 else []) + [1]
        else:
            orders = singlestep_orders(nfe, self.max_order)
        return Plan(self.time_grid(schedule, len(orders)), tuple(orders))

    def plan_on(self, schedule, grid):
        """Every step at the highest order, the jump to sigma = 0 first order."""
        return Plan(grid, tuple(1 if s == 0 else self.max_order for s in sigmas_after(schedule, grid)))

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, x, grid = denoiser.schedule, x_T, plan.grid
        for k, s, t in zip(plan.evals, grid[:-1], grid[1:]):
            iv = Interval(sched, s, t)
            k = 1 if iv.to_data else k
            x = (self._step_x0 if self.predict_x0 else self._step_eps)(denoiser, sched, iv, x, k)
        return x

    # --- noise prediction (DPM-Solver, Alg. 1 and 2 of the paper, 'dpmsolver' type) ---
    def _step_eps(self, denoiser, sched, iv, x, k):
        e_s = denoiser.eps(x, iv.s)
        if k == 1:
            return noise_step(iv, x, e_s)
        r1 = 0.5 if k == 2 else 1.0 / 3.0
        s1 = sched.t_of_lambda(iv.lam_s + r1 * iv.h)
        u1 = noise_step(Interval(sched, iv.s, s1), x, e_s)
        e_1 = denoiser.eps(u1, s1)
        base = noise_step(iv, x, e_s)
        if k == 2:   # x_t = base - sigma_t psi1 / (2 r1) (e_s1 - e_s)
            return base - bcast(iv.sigma_t * iv.psi1 / (2 * r1), x) * (e_1 - e_s)
        r2 = 2.0 / 3.0
        s2 = sched.t_of_lambda(iv.lam_s + r2 * iv.h)
        iv2 = Interval(sched, iv.s, s2)
        u2 = noise_step(iv2, x, e_s) - bcast((r2 / r1) * iv2.sigma_t * iv2.psi2, x) * (e_1 - e_s)
        e_2 = denoiser.eps(u2, s2)
        return base - bcast(iv.sigma_t * iv.psi2 / r2, x) * (e_2 - e_s)

    # --- data prediction (DPM-Solver++(2S)) ---
    def _step_x0(self, denoiser, sched, iv, x, k):
        d_s = denoiser.x0(x, iv.s)
        if k == 1:
            return data_step(iv, x, d_s)
        r1 = 0.5
        s1 = sched.t_of_lambda(iv.lam_s + r1 * iv.h)
        u1 = data_step(Interval(sched, iv.s, s1), x, d_s)
        d_1 = denoiser.x0(u1, s1)
        return data_step(iv, x, d_s) - bcast(iv.alpha_t * iv.phi1 / (2 * r1), x) * (d_1 - d_s)


@register_solver("dpm-solver-1")
class DPMSolver1(_Singlestep):
    """DPM-Solver-1 (noise prediction); algebraically DDIM with eta=0."""
    family = "exponential integrator"
    max_order = 1


@register_solver("dpm-solver-2")
class DPMSolver2(_Singlestep):
    """DPM-Solver-2, singlestep noise prediction, midpoint r1=1/2 (2 NFE a step)."""
    family = "exponential integrator"
    max_order = 2


@register_solver("dpm-solver-3")
class DPMSolver3(_Singlestep):
    """DPM-Solver-3, singlestep noise prediction, r=1/3,2/3 (3 NFE a step; DPM-Solver-fast plan)."""
    family = "exponential integrator"
    max_order = 3


@register_solver("dpmpp-2s")
class DPMpp2S(_Singlestep):
    """DPM-Solver++(2S), singlestep data prediction, midpoint r1=1/2 (2 NFE a step)."""
    family = "exponential integrator"
    max_order = 2
    predict_x0 = True
