"""Restart sampling (Xu et al. 2023), in sigma~ (solvers/sigma_view.py; docs/solvers.md#restart).

A main loop of EDM Heun steps (Karras et al. 2022, Alg. 2, churn optional) down the plan's grid. Each restart
interval [t_min, t_max] is attached to the grid level sigma_idx nearest t_min: after the step that lands there,
it is restarted K times. A restart adds forward noise from sigma_idx up to t_max in one jump,

    x~ <- x~ + s_noise sqrt(t_max^2 - sigma_idx^2) z,

and integrates back down with n - 1 Heun steps on a rho-polynomial grid s_0 = t_max > ... > s_{n-1} = sigma_idx,
with EDM churn of restart_gamma at the levels inside [smin, smax]. The inner grid and the scalars of the restart
steps are rounded to float32 as in the authors' code (their grid is built from float32 indices), so that a
float64 run reproduces theirs; the tensors stay in the state's dtype.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .edm import churned_step
from .grids import ends_at_data
from .noise_sampler import noise_sampler
from .options import Range, SpecError
from .plan import Plan, PlanError
from .registry import Solver, register_solver
from .schedules import as_t
from .sigma_view import SigmaView

F32 = torch.float32
DEFAULT_INTERVALS = "3x2@0.06-0.3"     # the paper's CIFAR-10 VP setting (Table 3): NFE 2N - 1 + 8
_ITEM = re.compile(r"(\d+)x(\d+)@(.+)")
_DASH = re.compile(r"(?<=[0-9.])-")  # the '-' between t_min and t_max, not an exponent's sign


@dataclass(frozen=True)
class Interval:
    """One restart interval: n points on the inner grid (n - 1 Heun steps), K restarts, [t_min, t_max] in sigma~."""
    n: int
    K: int
    t_min: float
    t_max: float

    def cost(self, at_data: bool) -> int:
        """NFE of its K restarts: 2 a Heun step; the last inner step is Euler when it lands on sigma~ = 0."""
        return self.K * (2 * (self.n - 1) - (1 if at_data else 0))

    def __str__(self):
        return f"{self.n}x{self.K}@{self.t_min!r}-{self.t_max!r}"


def parse_intervals(text: str) -> tuple[Interval, ...]:
    """'nxK@TMIN-TMAX' items joined by '/', e.g. '3x2@0.06-0.3' or '4x1@19.35-40.79/6x6@0.06-0.3'."""
    out = []
    for item in text.split("/"):
        m = _ITEM.fullmatch(item.strip())
        ends = _DASH.split(m.group(3)) if m else []
        try:
            lo, hi = (float(v) for v in ends)
        except ValueError:
            lo = hi = math.nan
        if not m or not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise SpecError(f"solver 'restart': intervals={text} is not a '/'-separated list of nxK@TMIN-TMAX "
                            "(n inner points, K restarts, 0 < TMIN < TMAX in sigma~), e.g. intervals=3x2@0.06-0.3")
        n, K = int(m.group(1)), int(m.group(2))
        if n < 2:
            raise SpecError(f"solver 'restart': interval {item} has n = {n} inner points; need n >= 2 "
                            "(n - 1 Heun steps from TMAX back to TMIN)")
        out.append(Interval(n, K, lo, hi))
    return tuple(out)


def inner_grid(s_end: float, t_max: float, n: int, rho: float) -> list[float]:
    """The restart's grid s_j = (t_max^(1/rho) + j/(n-1) (s_end^(1/rho) - t_max^(1/rho)))^rho, j = 0..n-1, as the
    authors compute it: the ramp in float32, so every s_j is a float32 value (s_0 = t_max, s_{n-1} ~ s_end)."""
    ramp = torch.arange(n, dtype=F32) / (n - 1)
    hi = t_max ** (1 / rho)
    span = torch.tensor(s_end, dtype=torch.float64) ** (1 / rho) - hi    # float64, rounded once to float32 below
    return ((hi + ramp * span.to(F32)) ** rho).tolist()


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=F32)


@register_solver("restart")
class Restart(Solver):
    """Restart sampling (Xu et al. 2023): EDM Heun, and K forward-noise jumps back over [t_min, t_max]; stochastic.

    intervals=nxK@TMIN-TMAX[/...] (default 3x2@0.06-0.3, the paper's CIFAR-10 setting); s_noise (1),
    restart_gamma (0.05: EDM churn inside a restart, at levels in [smin, smax] = [0.01, 1]), churn (0: EDM's
    S_churn of the main loop). The restarts cost sum 2 K (n - 1) NFE; the main loop spends the rest of the budget.
    """
    family = "stochastic"

    nominal_order = 2
    nfe_per_step = 2
    default_grid = "karras"
    defaults = {"intervals": DEFAULT_INTERVALS, "s_noise": 1.0, "restart_gamma": 0.05, "smin": 0.01, "smax": 1.0,
                "churn": 0.0}
    ranges = {"s_noise": Range(0, math.inf), "restart_gamma": Range(0, math.inf), "smin": Range(0, math.inf),
              "smax": Range(0, math.inf), "churn": Range(0, math.inf)}

    def check(self):
        self.restarts = parse_intervals(self.intervals)
        canonical = "/".join(map(str, self.restarts))      # one spelling of one configuration
        self.intervals = self.options["intervals"] = canonical
        if "intervals" in self.given:
            if canonical == DEFAULT_INTERVALS:
                del self.given["intervals"]
            else:
                self.given["intervals"] = canonical
        if self.smin > self.smax:
            raise SpecError(f"solver 'restart': smin={self.smin} is above smax={self.smax}; churn applies for "
                            "smin <= sigma~ <= smax")

    @property
    def stochastic(self):
        return self.s_noise > 0

    @property
    def restart_nfe(self) -> int:
        """The restarts' NFE when none of them ends at sigma~ = 0: sum over intervals of 2 K (n - 1)."""
        return sum(r.cost(False) for r in self.restarts)

    @property
    def min_nfe(self) -> int:
        return self.restart_nfe + 2     # the restarts and one main Heun step

    # --- the plan: the restarts' fixed cost, the main loop gets the rest ---
    def plan(self, schedule, nfe):
        self.require_nfe(nfe)
        plan = self._plan_main(schedule, nfe - self.restart_nfe)
        # a restart attached to sigma~ = 0 ends with an Euler step and costs less: the main loop may take what it
        # leaves, as long as the finer grid does not move that restart off sigma~ = 0
        least = sum(r.K for r in self.restarts)
        for main in range(nfe - self.restart_nfe + 1, nfe - self.restart_nfe + least + 1):
            if plan.nfe >= nfe - 1:
                break
            again = self._plan_main(schedule, main)
            if plan.nfe < again.nfe <= nfe:
                plan = again
        return plan

    def _plan_main(self, schedule, budget: int) -> Plan:
        """The main loop on `budget` NFE, the restarts added to the steps they follow. On a grid ending at
        sigma = 0 EDM's N = (budget + 1) // 2 levels, NFE 2N - 1; elsewhere Heun's plan (solvers/two_stage.py):
        (budget + 1) // 2 steps of 2 NFE, the last one Euler when the budget is odd."""
        grid = self.time_grid(schedule, (budget + 1) // 2)
        if ends_at_data(self.grid, schedule):
            main = [2] * (len(grid) - 2) + [1]
        else:
            main = [2] * (len(grid) - 1)
            main[-1] -= budget % 2
        return self._with_restarts(schedule, grid, main)

    def plan_on(self, schedule, grid):
        """On a given grid (e.g. EDM's N levels and sigma = 0): Heun steps, Euler onto sigma = 0, and the restarts."""
        return self._with_restarts(schedule, grid, [1 if s == 0 else 2 for s in sigmas_of(schedule, grid)[1:]])

    def _with_restarts(self, schedule, grid, main) -> Plan:
        top = float(torch.exp(-schedule.lambda_(as_t(schedule.T))))     # sigma~(T), SigmaView's sigma_max
        for r in self.restarts:
            if r.t_max > top:
                raise PlanError(f"solver 'restart': interval {r} reaches above this model's top sigma~ = "
                                f"{top:.6g}; give TMAX <= {top:.6g}")
        evals = list(main)
        for idx, cost in self.restart_costs(sigmas_of(schedule, grid)).items():
            evals[idx - 1] += cost
        return Plan(grid, tuple(evals))

    def attached(self, sbar: list[float]) -> dict[int, list[Interval]]:
        """{grid index: its intervals, in the order given}. An interval goes to the level nearest its t_min (the
        first on a tie) among the levels after the first that are below its t_max, the data point sigma~ = 0
        included; its restarts follow the main step that lands there."""
        out: dict[int, list[Interval]] = {}
        for r in self.restarts:
            below = [j for j in range(1, len(sbar)) if sbar[j] < r.t_max]
            if not below:
                raise PlanError(f"solver 'restart': interval {r} lies below the grid's last level sigma~ = "
                                f"{sbar[-1]:.6g}; give TMAX above it")
            out.setdefault(min(below, key=lambda j: (abs(sbar[j] - r.t_min), j)), []).append(r)
        return out

    def restart_costs(self, sbar: list[float]) -> dict[int, int]:
        """{grid index: NFE of the restarts after the main step landing there}."""
        return {idx: sum(r.cost(sbar[idx] == 0) for r in rs) for idx, rs in self.attached(sbar).items()}

    # --- sampling ---
    def sample(self, denoiser, x_T, plan, generator=None):
        v, ns = SigmaView(denoiser, plan, x_T), noise_sampler(x_T, generator)
        s, x = v.sigmas, v.start(x_T)
        attached, costs = self.attached(s), self.restart_costs(s)
        for i in range(plan.steps):
            # EDM Alg. 2, lines 4-6: churn (gamma = 0 by default), one draw a step also when gamma = 0
            gamma = min(self.churn / plan.steps, math.sqrt(2) - 1) if self.smin <= s[i] <= self.smax else 0.0
            gamma = max(0.0, min(gamma, v.sigma_max / s[i] - 1))          # not above the schedule's top
            s_hat = s[i] + gamma * s[i]
            x = churned_step(v, ns, x, i, s_hat, self.s_noise, heun=plan.evals[i] - costs.get(i + 1, 0) == 2)
            for r in attached.get(i + 1, ()):
                for _ in range(r.K):
                    x = self.restart(v, ns, x, s[i + 1], r)
        return v.finish(x)

    def restart(self, v: SigmaView, ns, x: torch.Tensor, s_end: float, r: Interval) -> torch.Tensor:
        """One restart from x~ at s_end: the forward jump to t_max, then n - 1 Heun steps back (2 NFE each, the
        last Euler when it lands on sigma~ = 0). The scalars are rounded to float32 where the authors' are."""
        g = inner_grid(s_end, r.t_max, r.n, self.rho)
        top, end = _f32(g[0]), _f32(g[-1])
        x = x + ns(g[-1], g[0]) * float((top * top - end * end).sqrt()) * self.s_noise   # the jump, one draw
        lo, hi = _f32(self.smin), _f32(self.smax)
        for j in range(r.n - 1):
            sj = _f32(g[j])
            gamma = self.restart_gamma if lo <= sj <= hi else 0.0
            gamma = max(0.0, min(gamma, v.sigma_max / g[j] - 1))
            s_hat = sj + _f32(gamma) * sj                                        # churn: one draw a step
            x_hat = x + float((s_hat * s_hat - sj * sj).sqrt() * _f32(self.s_noise)) * ns(g[j], float(s_hat))
            d = v.d(x_hat, v.D_at(x_hat, float(s_hat)), float(s_hat))
            h = float(_f32(g[j + 1]) - s_hat)
            x = x_hat + h * d                                                    # Euler
            if g[j + 1] > 0:                                                     # Heun
                d2 = v.d(x, v.D_at(x, g[j + 1]), g[j + 1])
                x = x_hat + h * (d + d2) / 2
        return x


def sigmas_of(schedule, grid) -> list[float]:
    """sigma~ = sigma / alpha at every grid time (float64), as SigmaView reads them."""
    alphas, sigmas, _ = schedule.alpha_sigma_lambda(torch.as_tensor(grid, dtype=torch.float64))
    return (sigmas / alphas).tolist()
