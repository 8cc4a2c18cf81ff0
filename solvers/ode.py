"""Generic ODE solvers from torchdiffeq on the probability-flow ODE, integrated in lambda.

With x_t = alpha x0 + sigma eps and lambda = log(alpha/sigma), the PF-ODE is
    dx/dlambda = (dlog(alpha)/dlambda - 1) x + alpha x0(x, t(lambda))
(VP: -alpha^2 x + alpha x0; VE: x0 - x). Lambda is the natural clock: the oracle models are smooth in it
whatever the schedule, and a lambda grid is exactly the solvers' time grid. A grid ending at sigma = 0
(lambda = inf) integrates to the point before it and then jumps to x0 there (1 NFE).
"""
from __future__ import annotations

import torch
from torchdiffeq import odeint

from .denoiser import bcast
from .grids import ends_at_data, sigmas_after
from .options import Range
from .plan import Plan
from .registry import Solver, register_solver


def pf_ode_rhs(denoiser):
    sched = denoiser.schedule

    def f(lam, x):
        t = sched.t_of_lambda(lam)
        a = sched.alpha(t)
        c = sched.dlog_alpha_dlambda(lam) - 1.0
        return bcast(c, x) * x + bcast(a, x) * denoiser.x0(x, t)
    return f


class _TorchDiffEq(Solver):
    default_grid = "logSNR"
    method = "?"

    def plan(self, schedule, nfe):
        if ends_at_data(self.grid, schedule):
            # steps of nfe_per_step NFE, then the 1-NFE jump to sigma = 0
            self.require_nfe(nfe)
            return self.plan_on(schedule, self.time_grid(schedule, (nfe - 1) // self.nfe_per_step + 1))
        return super().plan(schedule, nfe)

    def plan_on(self, schedule, grid):
        return Plan(grid, tuple(1 if s == 0 else self.nfe_per_step for s in sigmas_after(schedule, grid)))

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, grid = denoiser.schedule, plan.grid
        jump = float(sched.sigma(grid[-1])) == 0.0
        ts = grid[:-1] if jump else grid
        x = x_T
        if len(ts) > 1:
            lam = sched.lambda_(ts).to(device=x.device)
            x = self._integrate(pf_ode_rhs(denoiser), x, lam)
        if jump:
            x = denoiser.x0(x, ts[-1])
        return x

    def _integrate(self, f, x, lam):
        return odeint(f, x, lam.to(x.dtype), method=self.method)[-1]


@register_solver("ode-euler")
class ODEEuler(_TorchDiffEq):
    """torchdiffeq 'euler' on the PF-ODE in lambda (1 NFE a step)."""
    family = "singlestep and generic ODE"
    nominal_order, method = 1, "euler"


@register_solver("ode-midpoint")
class ODEMidpoint(_TorchDiffEq):
    """torchdiffeq 'midpoint' on the PF-ODE in lambda (2 NFE a step)."""
    family = "singlestep and generic ODE"
    nominal_order, method, nfe_per_step, min_nfe = 2, "midpoint", 2, 2


@register_solver("ode-rk4")
class ODERK4(_TorchDiffEq):
    """torchdiffeq 'rk4' (3/8 rule) on the PF-ODE in lambda (4 NFE a step)."""
    family = "singlestep and generic ODE"
    nominal_order, method, nfe_per_step, min_nfe = 4, "rk4", 4, 4


@register_solver("ode-dopri5")
class ODEDopri5(_TorchDiffEq):
    """torchdiffeq adaptive 'dopri5' on the PF-ODE in lambda; NFE is what it used (not budgeted)."""
    family = "singlestep and generic ODE"
    nominal_order, method, adaptive = 5, "dopri5", True
    defaults = {"rtol": 1e-6, "atol": 1e-6}
    ranges = {"rtol": Range(0, 1, lo_open=True, hi_open=True), "atol": Range(0, 1, lo_open=True, hi_open=True)}

    def plan(self, schedule, nfe):
        """Only the endpoints matter (the step size is adaptive): no budget, NFE is what it used."""
        if ends_at_data(self.grid, schedule):
            # integrate to t_min, then the x0 jump (not the jump from T a 1-step grid ending at 0 would give)
            return self.plan_on(schedule, torch.tensor([schedule.T, schedule.t_min, 0.0], dtype=torch.float64))
        return self.plan_on(schedule, self.time_grid(schedule, 1))

    def plan_on(self, schedule, grid):
        return Plan(grid, adaptive=True)

    def _integrate(self, f, x, lam):
        ends = torch.stack([lam[0], lam[-1]]).to(x.dtype)
        return odeint(f, x, ends, method="dopri5", rtol=self.rtol, atol=self.atol)[-1]
