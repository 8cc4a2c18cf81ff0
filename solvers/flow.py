"""Flow-matching samplers: Euler and Heun on a rectified flow's ODE dx/dt = v(x, t), v = eps - x0
(docs/solvers.md#flow-matching).

With x_t = (1 - t) x0 + t eps, the probability-flow ODE in t is dx/dt = E[eps - x0 | x_t = x], the velocity a
flow network predicts. These are diffusers' FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler
(deterministic), stepping in (x, t) itself: not the sigma~ view EDM's `euler`/`heun` take. On a rectified flow
Euler in t is DDIM (x_s + (t - s) v = (t/s) x_s + (1 - t/s) x0); Heun in t is a different method from EDM's Heun
in sigma~ = t / (1 - t). Both start at pure noise t = 1 (their default grid, `flow_euler`), where v is x - x0.
"""
from __future__ import annotations

from .plan import PlanError
from .registry import Solver, register_solver
from .two_stage import TwoStage


class _Flow(Solver):
    family = "singlestep and generic ODE"
    flow_sampler = True
    alpha_zero_start = True
    default_grid = "flow_euler"

    def plan(self, schedule, nfe):
        self.require_rectified_flow(schedule)
        return super().plan(schedule, nfe)

    def plan_on(self, schedule, grid):
        self.require_rectified_flow(schedule)
        return super().plan_on(schedule, grid)

    def require_rectified_flow(self, schedule):
        if schedule.kind != "rf":
            raise PlanError(f"solver '{self.name}' steps a rectified flow's velocity; this model's schedule is "
                            f"{schedule.name} (use ddim, euler or heun there, or a model with "
                            "schedule=rectified-flow)")

    @staticmethod
    def steps_dt(plan, schedule, x):
        """Per grid point the Denoiser's time for x, per interval dt = t_{i+1} - t_i (< 0) in x's dtype."""
        g = plan.on(schedule)
        return g.times(x), g.like(g.grid[1:] - g.grid[:-1], x)


@register_solver("flow-euler")
class FlowEuler(_Flow):
    """Flow-matching Euler (diffusers FlowMatchEulerDiscrete): x += (t_next - t) v, 1 NFE a step."""

    nominal_order = 1

    def sample(self, denoiser, x_T, plan, generator=None):
        at, dt = self.steps_dt(plan, denoiser.schedule, x_T)
        x = x_T
        for i in range(plan.steps):
            x = x + dt[i] * denoiser.predict(x, at[i]).velocity
        return x


@register_solver("flow-heun")
class FlowHeun(_Flow, TwoStage):
    """Flow-matching Heun (diffusers FlowMatchHeunDiscrete): trapezoid in t, 2 NFE a step; a step onto t = 0, or an
    odd budget's last step, is Euler (diffusers: NFE 2N - 1)."""

    nominal_order = 2
    min_nfe = 1   # diffusers' N = 1: one Euler step (onto t = 0 on its grid)

    def sample(self, denoiser, x_T, plan, generator=None):
        at, dt = self.steps_dt(plan, denoiser.schedule, x_T)
        x = x_T
        for i in range(plan.steps):
            v = denoiser.predict(x, at[i]).velocity
            if plan.evals[i] == 1:
                x = x + dt[i] * v
                continue
            v2 = denoiser.predict(x + dt[i] * v, at[i + 1]).velocity
            x = x + dt[i] * (v + v2) / 2
        return x
