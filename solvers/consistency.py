"""Consistency samplers (spec core-solvers-consistency-checkpoints.md 3.2, 3.5).

cm-multistep (Song et al. 2023, Alg. 1): the model's x0-prediction is the consistency function f(x, sigma) (for
a consistency checkpoint it is c_skip x + c_out F(...), clamped: models/hub.py). From x = sigma_max z:
    x0 = f(x, sigma_k);   x = x0 + sqrt(sigma_{k+1}^2 - sigma_min^2) z_k      (VE; last step: return x0)
On a VP model the re-noising is alpha_{k+1} x0 + sigma_{k+1} z_k (the forward process).

ctm-gamma (Kim et al. 2024, gamma-sampling): a long jump with the two-time network G to s between t_{i+1} and
sigma_min, then forward noise from s back up to t_{i+1}. Both spend one NFE a step.
"""
from __future__ import annotations

import torch

from .denoiser import bcast, gaussian_like
from .exponential import Interval, data_step
from .options import Range, SpecError
from .plan import FixedNFE, Plan
from .registry import Solver, register_solver


def karras_index_sigmas(schedule, indices, n_idx: int, rho: float) -> torch.Tensor:
    """sigma(i) = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho on the N-point Karras index grid."""
    ramp = torch.as_tensor(indices, dtype=torch.float64) / (n_idx - 1)
    lo, hi = schedule.t_min ** (1 / rho), schedule.T ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def consistency_grid(schedule, nfe: int) -> torch.Tensor:
    """diffusers' CMStochasticIterativeScheduler.set_timesteps(nfe) on the model's Karras index grid of N points:
    indices k (N // nfe), k = 0..nfe-1, then sigma_min appended (so NFE = len(grid) - 1)."""
    n_idx = schedule.consistency_steps
    if nfe > n_idx:
        raise SpecError(f"NFE {nfe} exceeds this consistency model's {n_idx}-point sigma grid")
    sigmas = karras_index_sigmas(schedule, torch.arange(nfe) * (n_idx // nfe), n_idx, schedule.rho)
    return torch.cat([sigmas, torch.tensor([schedule.t_min], dtype=torch.float64)])


def index_grid(schedule, ts: str, n_idx: int, rho: float) -> torch.Tensor:
    """The CM repo's `--ts` index list (e.g. '0/22/39' on N = 40: sigma 80 -> 1.3824 -> 0.002), NFE = len - 1."""
    try:
        idx = [int(v) for v in ts.split("/")]
    except ValueError:
        idx = []
    if len(idx) < 2 or idx[0] != 0 or idx[-1] != n_idx - 1 or any(b <= a for a, b in zip(idx, idx[1:])):
        raise SpecError(f"solver 'cm-multistep': ts={ts} is not an increasing '/'-separated index list from 0 to "
                        f"{n_idx - 1} (N = {n_idx}), e.g. ts=0/22/{n_idx - 1}")
    return karras_index_sigmas(schedule, idx, n_idx, rho)


@register_solver("cm-multistep")
class ConsistencyMultistep(Solver):
    """Consistency-model multistep sampling (Song et al. 2023, Alg. 1): denoise with f, re-noise, 1 NFE a step.

    Grid: on a consistency checkpoint, diffusers' CMStochasticIterativeScheduler timesteps for the NFE (its
    `num_train_timesteps`-point Karras grid); elsewhere (any diffusion model's x0 as f) the `karras` grid or
    `grid=`. `ts=0/22/39` gives the CM repo's tuned index list instead (on the checkpoint's N-point grid, or
    `N=` points elsewhere; NFE = len(ts) - 1). Stochastic: z_k comes from the runner's generator.
    """
    family = "consistency"

    nominal_order = 1
    stochastic = True
    default_grid = "karras"
    consistency_sampler = True   # meant for consistency models (suite digits-cd; the standard suite leaves it out)
    defaults = {"ts": "", "N": 0}
    ranges = {"N": (0, 100_000)}  # 0: the checkpoint's own index grid
    presence_matters = ("grid",)  # a given grid overrides a consistency checkpoint's own

    def check(self):
        if self.ts and "grid" in self.given:
            raise SpecError("solver 'cm-multistep': give ts= or grid=, not both")
        if self.N and not self.ts:
            raise SpecError("solver 'cm-multistep': N= is the size of the index grid of ts=; give ts= too")
        if self.ts:   # its form up front; its last index against the model's N once the model is known (plan)
            try:
                idx = [int(v) for v in self.ts.split("/")]
            except ValueError:
                idx = []
            if len(idx) < 2 or idx[0] != 0 or any(b <= a for a, b in zip(idx, idx[1:])) or \
                    (self.N and idx[-1] != self.N - 1):
                to = f" to {self.N - 1} (N = {self.N})" if self.N else ""
                raise SpecError(f"solver 'cm-multistep': ts={self.ts} is not an increasing '/'-separated index list "
                                f"from 0{to}, e.g. ts=0/22/39")

    def plan(self, schedule, nfe: int) -> Plan:
        if self.ts:   # an index list fixes the NFE: other budgets raise FixedNFE (the runner skips those cells)
            spends = len(self.ts.split("/")) - 1
            if nfe != spends:
                raise FixedNFE(self.spec, nfe, spends)
            n_idx = self.N or schedule.consistency_steps
            if not n_idx:
                raise SpecError("solver 'cm-multistep': ts= indexes a Karras grid of N points; this model is not a "
                                "consistency checkpoint, so give N= too (e.g. ts=0/22/39,N=40)")
            return self.plan_on(schedule, index_grid(schedule, self.ts, n_idx, schedule.rho or self.rho))
        if schedule.consistency_steps and "grid" not in self.given:
            self.require_nfe(nfe)
            return self.plan_on(schedule, consistency_grid(schedule, nfe))
        return super().plan(schedule, nfe)

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, g, x = denoiser.schedule, plan.on(denoiser.schedule), x_T
        at = g.times(x_T)
        if sched.kind == "ve":   # the reference's noise level: sqrt(sigma_next^2 - sigma_min^2)
            alpha, sigma = None, g.like(torch.sqrt(torch.clamp(g.sigmas ** 2 - sched.t_min ** 2, min=0)), x_T)
        else:
            alpha, sigma = g.like((g.alphas, g.sigmas), x_T)
        for k in range(plan.steps):   # x0 and z are this loop's own: the renoising is in place on them
            x0 = denoiser.x0(x, at[k])
            if k == plan.steps - 1:
                return x0
            z = gaussian_like(x, generator).mul_(sigma[k + 1])
            x = (x0 if alpha is None else x0.mul_(alpha[k + 1])).add_(z)
        return x


@register_solver("ctm-gamma")
class CTMGamma(Solver):
    """CTM gamma-sampling (Kim et al. 2024): jump with G(x, t_i, s), re-noise from s to t_{i+1}; 1 NFE a step.

    With sigma~ = sigma/alpha (sigma on VE) on the grid t_0 > ... > t_M, step i jumps to s with
        sigma~_s = sqrt(1 - gamma^2) (sigma~_{i+1} - sigma~_M) + sigma~_M     (sony/ctm's sigma_min offset)
    and re-noises x_s to t_{i+1} with the forward process, x = (alpha_{i+1}/alpha_s) x_s + sqrt(sigma_{i+1}^2 -
    (alpha_{i+1} sigma_s/alpha_s)^2) z (VE: x_s + sqrt(sigma_{i+1}^2 - sigma_s^2) z); the last jump lands on t_M.
    gamma = 0 (the paper's default): deterministic long jumps along the ODE; gamma = 1: CM-style multistep.
    G is the model's flow map when it has one (a trajectory model: `gmm2d-flow`, `digits-oracle-flow`,
    `digits-flow`); any other model jumps with CTM's 'euler' parametrization G = (s/t) x + (1 - s/t) g with its
    x0-prediction as g, which is DDIM's step (so gamma = 0 there is DDIM on the same grid).
    """
    family = "consistency"

    nominal_order = 1
    default_grid = "karras"
    defaults = {"gamma": 0.0}
    ranges = {"gamma": Range(0, 1, note="gamma must be in [0, 1]")}
    consistency_sampler = True   # meant for trajectory/consistency models (suites consistency, digits-cd)

    def check(self):
        if not 0.0 <= self.gamma <= 1.0:
            raise SpecError(f"solver 'ctm-gamma': gamma must be in [0, 1], got {self.gamma:g}")

    @property
    def stochastic(self):
        return self.gamma > 0

    def jump_time(self, schedule, grid, i: int) -> torch.Tensor:
        """s of step i: t_{i+1} at gamma 0, t_M at gamma 1 (exactly), else the time of sigma~_s."""
        if self.gamma == 0.0 or i == len(grid) - 2:
            return grid[i + 1]
        if self.gamma == 1.0:
            return grid[-1]
        sg_next, sg_min = (torch.exp(-schedule.lambda_(grid[j])) for j in (i + 1, len(grid) - 1))
        sg_s = (1.0 - self.gamma ** 2) ** 0.5 * (sg_next - sg_min) + sg_min
        return grid[-1] if float(sg_s) == 0.0 else schedule.t_of_lambda(-torch.log(sg_s))

    def sample(self, denoiser, x_T, plan, generator=None):
        sched, x, grid = denoiser.schedule, x_T, plan.grid
        for i in range(len(grid) - 1):
            s = self.jump_time(sched, grid, i)
            if denoiser.has_flow_map:
                x_s = denoiser.flow_map(x, grid[i], s)
            else:
                x_s = data_step(Interval(sched, grid[i], s), x, denoiser.x0(x, grid[i]))
            if i == len(grid) - 2 or self.gamma == 0.0:
                x = x_s
                continue
            iv = Interval(sched, s, grid[i + 1])    # forward process s -> t_{i+1}
            c = iv.alpha_t / iv.alpha_s
            std = torch.sqrt(torch.clamp(iv.sigma_t ** 2 - (c * iv.sigma_s) ** 2, min=0))
            x = bcast(c, x) * x_s + bcast(std, x) * gaussian_like(x, generator)
        return x
