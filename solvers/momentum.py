"""Heavy-ball momentum (HB) and Generalized Heavy Ball (GHVB), Wizadwongsa et al., ICLR 2024
(docs/solvers.md#momentum).

Momentum damps the slope fed to an Euler step in the DDIM coordinates (xbar = x/alpha against sbar, or
x/sigma against alpha/sigma for data prediction), which enlarges the stability region of high-order
multistep methods at the cost of accuracy: HB with beta < 1 is first order (Theorem 1), GHVB of order r keeps
order r (Theorem 2). No extra NFE. Momentum is per-sample state, reset at every `sample` call.
"""
from __future__ import annotations

import math

from .dpmpp import DPMpp2M
from .multistep import Modifier
from .options import Range, SpecError
from .pndm import PseudoLinearMultistep, combine
from .registry import register_solver


class HeavyBall(Modifier):
    """Heavy-ball momentum on the slope (hook `slope` of the multistep core; paper eq. 14 / Alg. 1):
    v <- (1 - beta) v + beta D, started at v = D of the first step. A base whose momentum form leaves first-order
    steps alone (DPM-Solver++: `momentum_at_first_order = False`) feeds them D and keeps v."""

    hook = "slope"

    def check(self):
        super().check()
        check_beta(self.name, self.beta)

    def slope(self, D, p, ctx):
        v = ctx.get("v")
        if v is None:
            ctx["v"] = D
            return D
        if p == 1 and not self.momentum_at_first_order:
            return D
        ctx["v"] = (1 - self.beta) * v + self.beta * D
        return ctx["v"]


def ghvb_coefficients(c: int, beta: float):
    """GHVB weights a_j^(c)(beta) / beta on v_{n+1-j}, newest first (each row sums to 1)."""
    b = beta
    rows = {
        1: (b,),
        2: ((2 + b) / 2, -(2 - b) / 2),
        3: ((18 + 5 * b) / 12, -(24 - 8 * b) / 12, (6 - b) / 12),
        4: ((46 + 9 * b) / 24, -(78 - 19 * b) / 24, (42 - 5 * b) / 24, -(10 - b) / 24),
        5: ((1650 + 251 * b) / 720, -(3420 - 646 * b) / 720, (2880 - 264 * b) / 720, -(1380 - 106 * b) / 720,
            (270 - 19 * b) / 720),
    }
    return tuple(a / b for a in rows[c])


BETA_RANGE = Range(0, 1, lo_open=True)    # heavy-ball momentum: beta = 1 is the base method


def check_beta(name: str, beta: float):
    if not 0 < beta <= 1:
        raise SpecError(f"option beta={beta} for solver '{name}' not accepted: need 0 < beta <= 1")


def momentum_number(m: float) -> tuple[int, float]:
    """GHVB momentum number m -> (order r, beta): 3.8 -> (4, 0.8), 2 -> (2, 1.0); the fraction is
    rounded to 12 digits because 3.8 % 1 is 0.7999999999999998 in floating point."""
    r = math.ceil(round(m, 12))
    return r, round(m - (r - 1), 12)


@register_solver("plms+hb")
class PLMSHeavyBall(HeavyBall, PseudoLinearMultistep):
    """PLMS-k with heavy-ball momentum (Alg. 1), AB1..AB_{k-1} warm-up, NFE = steps; default PLMS4 with beta 0.9.

    Defaults: order 4, beta 0.9 (the paper's DiT-XL setting, best of its HB runs). The base is the momentum
    paper's PLMS-k, whose warm-up is AB1, AB2, ... at 1 NFE a step (`plms:warmup=ab`), not the diffusers
    pseudo-Heun warm-up of `plms`; beta = 1 gives that base exactly. Grid as `plms`.
    """
    family, base = "seed modifier", "plms"

    warmup = "ab"
    defaults = {"order": 4, "beta": 0.9}
    choices = {"order": (1, 2, 3, 4, 5)}
    ranges = {"beta": BETA_RANGE}


@register_solver("ghvb")
class GHVB(PseudoLinearMultistep):
    """Generalized heavy ball (Alg. 2) on PLMS; order = momentum number (3.8 = order 4, beta 0.8), NFE = steps.

    `order` is the paper's momentum number m (0 < m <= 5): a fractional m means order r = ceil(m) with
    beta = m - (r - 1); an integer m means beta = 1, i.e. plain PLMS-r with AB warm-up (`plms:order=r,warmup=ab`;
    m = 1 is DDIM). Give beta explicitly only with an integer order: `ghvb:order=4,beta=0.8` = `ghvb:order=3.8`.
    Default 3.8: the paper's best DiT-XL setting at 6-9 steps. The first r - 1 steps warm up with GHVB of the
    lower orders and the same beta. Grid as `plms`.
    """
    family = "linear multistep"

    warmup = "ab"
    defaults = {"order": 3.8, "beta": 1.0}
    ranges = {"order": Range(0, 5, lo_open=True, note="the momentum number must be in (0, 5], e.g. 1.5, 2.5, 3.8"),
              "beta": BETA_RANGE}
    presence_matters = ("grid", "beta")  # a given beta is checked against the order

    def check(self):
        if not 0 < self.order <= 5:
            raise SpecError(f"option order={self.order} for solver 'ghvb' not accepted: the momentum number must be "
                            "in (0, 5], e.g. 1.5, 2.5, 3.8")
        r, beta = momentum_number(self.order)
        if "beta" in self.given:
            if beta != 1.0:
                raise SpecError(f"solver 'ghvb' got a fractional order={self.order} and beta={self.beta}: give either "
                                "the momentum number (order=3.8) or an integer order with beta (order=4,beta=0.8)")
            beta = self.beta
        check_beta(self.name, beta)
        self.r, self.momentum = r, beta

    @property
    def history_length(self) -> int:
        return self.r

    def gradient(self, hist, ctx):
        """Paper Alg. 2: the moving average before the multistep combination, v <- (1 - beta) v + beta e;
        slope = sum_j a_j^(c)(beta) v_{n+1-j} / beta over the last c = min(r, stored) velocities."""
        e, vs = hist.Ms[-1], ctx.setdefault("vs", [])
        v = e if not vs else (1 - self.momentum) * vs[-1] + self.momentum * e
        ctx["vs"] = (vs + [v])[-self.r:]
        return combine(ghvb_coefficients(len(ctx["vs"]), self.momentum), ctx["vs"])


@register_solver("dpmpp-2m+hb")
class DPMpp2MHeavyBall(HeavyBall, DPMpp2M):
    """DPM-Solver++(2M) with heavy-ball momentum on its slope D, 1 NFE a step; default beta 0.8.

    x_t = (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) v with v <- (1 - beta) v + beta D, D = m0 + (m0 - m1)/(2 r0):
    HB-Euler on the x0-ODE in (x/sigma, alpha/sigma). First-order steps (the first step, lower_order_final
    steps, a step onto sigma = 0) use m0 directly and leave v alone. v starts at the first x0 prediction, as the
    DPM-Solver-pytorch fork behind the paper's ADM FID table (variant (b) of the spec; the diffusers wrapper
    instead starts v at the first D). Default beta 0.8, that table's setting. lower_order_final follows
    `dpmpp-2m` (diffusers' '< 15 steps' rule; the fork uses < 10); beta = 1 is `dpmpp-2m` up to rounding (the
    slope form adds the same terms in another order).
    """
    family, base = "seed modifier", "dpmpp-2m"

    nominal_order = 1
    defaults = {"beta": 0.8, "lower_order_final": True}
    choices = {}
    ranges = {"beta": BETA_RANGE}
    solver_type = "dpmsolver"
