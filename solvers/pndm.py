"""Pseudo numerical methods (Liu et al. 2022, PNDM): a classical ODE formula on the noise predictions, then
the DDIM transfer (docs/solvers.md#pndm).

A step t -> t' has a gradient part, which combines noise predictions into an effective e', and the transfer
phi(x_t, e'; t -> t') of PNDM eq. (9), which is the DDIM step (`noise_step`): x_t' = alpha_t' (x_t/alpha_t +
(sbar_t' - sbar_t) e'), sbar = sigma/alpha. Gradient parts:
    linear multistep (PLMS, eq. 12): e' = AB_c(e_t, e_{t+d}, ...), c = min(order, history)
    pseudo improved Euler (S-PNDM warm-up): e' = (e1 + e2)/2, e2 at the DDIM predictor x1
    pseudo Runge-Kutta (F-PNDM warm-up, eq. 13): e' = (e1 + 2 e2 + 2 e3 + e4)/6, stages at the mid time
Every transfer of a step starts from the step's own x_t; only e1 (at x_t) enters the multistep history.
Model outputs always reach the combination as eps (the Denoiser converts x0- and v-prediction), never raw.

The AB coefficients are the constant ones whatever the grid, as in every reference implementation:
they are exact for steps uniform in sbar only, so on the usual grids the methods are second order
asymptotically (their higher-order terms still dominate at practical step counts).
"""
from __future__ import annotations

import math

import torch

from .exponential import Interval, noise_step
from .grids import sigmas_after
from .multistep import Multistep
from .plan import Plan
from .registry import register_solver

# Adams-Bashforth coefficients, newest value first
AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
    5: (1901 / 720, -2774 / 720, 2616 / 720, -1274 / 720, 251 / 720),
}


def combine(coefs, values):
    """sum_j coefs[j] * values[-1 - j]: coefficients newest first, values oldest first. Added up as sum() adds
    (0 + first + second ...), in place on the first product."""
    terms = (c * v for c, v in zip(coefs, reversed(values)))
    total = next(terms).add_(0)
    for term in terms:
        total.add_(term)
    return total


def scalars_like(values, x: torch.Tensor):
    """Python floats as 0-d tensors of x's dtype (float32 or float64) on its device, made once a run: a product
    with one of them is the product with the float itself (which torch rounds to that dtype first), without
    converting the float again at every product."""
    if x.dtype not in (torch.float32, torch.float64):
        return values
    return torch.tensor(values, dtype=x.dtype, device=x.device).unbind()


def transfer(schedule, x, e, s, t):
    """PNDM's transfer phi(x_s, e; s -> t) = the DDIM step (s may be a per-sample (N,) time)."""
    return noise_step(Interval(schedule, s, t), x, e)


class PseudoLinearMultistep(Multistep):
    """Shared sampler of the PNDM family on the multistep core: warm-up steps ('heun', 'prk' or 'ab'), then
    linear multistep steps; the history holds noise predictions.

    Subclasses set `order` (the AB order) and `warmup`; `gradient` is the multistep gradient part (GHVB
    overrides it); the heavy-ball and time-shift modifiers take the core's slope and model_time hooks.
    """

    order = 4
    warmup = "heun"
    predicts = "eps"
    offers = ("model_time", "slope")
    momentum_at_first_order = True   # a momentum modifier averages every step's slope (momentum paper, Alg. 1)
    default_grid = "leading"   # the PNDM papers' uniform grid: k * (N // S), then the data point
    presence_matters = ("grid",)  # no grid given: time_uniform on a continuous schedule

    @property
    def nominal_order(self):
        return self.order

    @property
    def warmup_steps(self) -> int:
        return {"ab": 0, "heun": 1, "prk": self.order - 1}[self.warmup]

    @property
    def extra_nfe(self) -> int:
        """NFE beyond one a step: a pseudo-Heun step costs 2, a pseudo-RK step 4."""
        return {"ab": 1, "heun": 2, "prk": 4}[self.warmup] * self.warmup_steps - self.warmup_steps

    @property
    def min_nfe(self) -> int:
        # warm-up steps land on sigma > 0 only when at least one multistep step follows them (a grid may end
        # at sigma = 0, where no stage can be evaluated)
        return self.warmup_steps + self.extra_nfe + (1 if self.warmup_steps else 0) or 1

    @property
    def history_length(self) -> int:
        return math.ceil(self.order)

    def plan(self, schedule, nfe):
        self.require_nfe(nfe)
        return self.plan_on(schedule, self.time_grid(schedule, nfe - self.extra_nfe))

    def plan_on(self, schedule, grid):
        """Warm-up steps cost their stages; a warm-up step onto sigma = 0 cannot evaluate there: it is a
        multistep step (1 NFE)."""
        cost = {"ab": 1, "heun": 2, "prk": 4}[self.warmup]
        return Plan(grid, tuple(cost if i < self.warmup_steps and s > 0 else 1
                                for i, s in enumerate(sigmas_after(schedule, grid))))

    def time_grid(self, schedule, steps):
        grid = self.grid
        if "grid" not in self.given and schedule.num_train_steps is None:
            grid = "time_uniform"   # the uniform grid of a continuous schedule
        return self.named_grid(grid, schedule, steps)

    def step_order(self, i, plan, iv):
        return min(self.history_length, i + 1)    # AB order from the history length

    def gradient(self, hist, ctx):
        """PLMS-k gradient part: e' = AB_c of the stored noise predictions, c = min(k, stored)."""
        c, ab = len(hist.Ms), ctx.setdefault("ab", {})
        if c not in ab:
            ab[c] = scalars_like(AB[c], hist.Ms[-1])
        return combine(ab[c], hist.Ms)

    def update(self, denoiser, iv, x, hist, p, ctx, i, plan):
        e = hist.Ms[-1]
        if plan.evals[i] > 1:   # a warm-up step: its stages, from the step's own x_t; iv ends at grid time i + 1
            at_t = plan.on(denoiser.schedule).times(x)[i + 1]
            slope = (self._pseudo_heun if self.warmup == "heun" else self._pseudo_rk)(denoiser, iv, x, e, at_t)
        else:
            slope = self.slope(self.gradient(hist, ctx), p, ctx)
        return noise_step(iv, x, slope)

    @staticmethod
    def _pseudo_heun(denoiser, iv, x, e1, at_t):
        """The stage at the DDIM predictor x1 = transfer(x, e1; s -> t); at_t: t for the Denoiser."""
        x1 = noise_step(iv, x, e1)
        return (e1 + denoiser.eps(x1, at_t)).div_(2)

    @staticmethod
    def _pseudo_rk(denoiser, iv, x, e1, at_t):
        """PNDM eq. (13); the mid time is halfway in t (the official code's (t + t_next)/2)."""
        sched, s, mid = denoiser.schedule, iv.s, (iv.s + iv.t) / 2
        e2 = denoiser.eps(transfer(sched, x, e1, s, mid), mid)
        e3 = denoiser.eps(transfer(sched, x, e2, s, mid), mid)
        e4 = denoiser.eps(noise_step(iv, x, e3), at_t)
        return (e1 + 2 * e2 + 2 * e3 + e4) / 6


@register_solver("plms")
class PLMS(PseudoLinearMultistep):
    """PLMS (diffusers/CompVis, skip_prk_steps): pseudo-Heun step, then AB2, AB3, AB4; NFE = steps + 1.

    Options: `order` k of the AB formula (4), `warmup`: 'heun' (diffusers/CompVis: the first step is a
    pseudo-Heun step, 2 NFE, whose corrected state is evaluated again, the repeated timestep of diffusers;
    then AB2, AB3 until the history holds k values), 'prk' (k - 1 pseudo-RK steps of 4 NFE, F-PNDM) or 'ab'
    (AB1, AB2, ... warm-up at 1 NFE a step: the momentum paper's PLMS-k, NFE = steps).
    NFE = steps + 1 ('heun'), steps + 3(k - 1) ('prk'), steps ('ab'); min_nfe 3, 4k - 3, 1: a warm-up step needs
    a multistep step after it, since a grid may end at sigma = 0 where no stage can be evaluated (a warm-up step
    that lands there anyway is a multistep step).
    Deviations from the reference code: on a continuous schedule the default grid is time_uniform; F-PNDM's
    mid time is (t + t')/2 in continuous time (diffusers rounds it to t - floor(d/2) training steps); sampling
    follows diffusers' table indexing (abar[k] at step k), not the official PNDM code's abar[k + 1]; the
    'leading' grid ends at the data point (diffusers' set_alpha_to_one=True), where the official code and
    diffusers' default stop at abar[0].
    """
    family = "linear multistep"

    defaults = {"order": 4, "warmup": "heun"}
    choices = {"order": (1, 2, 3, 4), "warmup": ("heun", "prk", "ab")}


@register_solver("s-pndm")
class SPNDM(PseudoLinearMultistep):
    """S-PNDM: one pseudo-Heun step (2 NFE), then AB2 (PNDM official gen_order_2); NFE = steps + 1, min 3."""
    family = "linear multistep"

    order, warmup = 2, "heun"


@register_solver("f-pndm")
class FPNDM(PseudoLinearMultistep):
    """F-PNDM (PNDM paper Alg. 2): three pseudo-RK steps (4 NFE each), then PLMS/AB4; NFE = steps + 9, min 13.

    min_nfe is 13, not the paper's 12 (three PRK steps alone): a grid may end at sigma = 0, where the last
    pseudo-RK stage cannot be evaluated, so at least one multistep step follows the warm-up.
    """
    family = "linear multistep"

    order, warmup = 4, "prk"
