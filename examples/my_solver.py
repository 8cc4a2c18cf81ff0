"""A custom solver plugin: exponential Heun in data prediction (2 NFE a step).

Run it against the field without touching the package:
    nfebench run --plugin examples/my_solver.py --solvers my-heun-x0,ddim,dpmpp-2m --nfe 4,8,16
"""
from solvers import Plan, Solver, register_solver
from solvers.exponential import Interval, data_step


@register_solver("my-heun-x0")
class MyHeunX0(Solver):
    """Example plugin: exponential Heun, a DDIM predictor corrected with the mean of two x0 predictions."""

    nominal_order, nfe_per_step, min_nfe, default_grid = 2, 2, 2, "logSNR"

    def plan_on(self, schedule, grid):
        """2 NFE a step; the jump to sigma = 0 has nothing to correct (1 NFE)."""
        return Plan(grid, tuple(1 if float(schedule.sigma(t)) == 0 else 2 for t in grid[1:]))

    def sample(self, denoiser, x_T, plan, generator=None):
        x, grid = x_T, plan.grid
        for s, t in zip(grid[:-1], grid[1:]):
            step = Interval(denoiser.schedule, s, t)
            D_s = denoiser.x0(x, s)                  # 1 NFE
            x_pred = data_step(step, x, D_s)         # DDIM predictor
            if step.to_data:                         # nothing to correct on the final jump to x0
                x = x_pred
                continue
            D_t = denoiser.x0(x_pred, t)             # 1 NFE
            x = data_step(step, x, (D_s + D_t) / 2)  # trapezoidal corrector
        return x
