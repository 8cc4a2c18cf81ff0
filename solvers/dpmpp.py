"""Multistep DPM-Solver++ (Lu et al. 2022b, Alg. 2): data prediction, one NFE a step.

The history holds the data predictions D at the last grid points; the first steps warm up with the orders
the history allows, `lower_order_final` drops the order of the last steps when there are fewer than 15
(diffusers' rule; the official code uses 10), and a step onto sigma = 0 is first order.
"""
from __future__ import annotations

from .denoiser import bcast, rsub_
from .exponential import Interval, data_step, multistep_order
from .multistep import Multistep
from .registry import register_solver


def dpmpp_multistep_update(iv: Interval, x, Ds, lams, order: int, solver_type: str = "dpmsolver",
                           d2_weight: str = "reference"):
    """One DPM-Solver++ multistep update from the newest point of the history (Ds, lams: oldest first)."""
    D0 = Ds[-1]
    x_next = data_step(iv, x, D0)
    if order == 1:
        return x_next
    # below, in place on the tensors this function made (x_next, D1_0, ...), never on the history's
    h = iv.h
    r0 = (lams[-1] - lams[-2]) / h
    D1_0 = (D0 - Ds[-2]).div_(bcast(r0, x))
    if order == 2:
        if solver_type == "dpmsolver":   # diffusers 'midpoint': x_next - alpha_t phi1 D1_0 / 2
            return x_next.sub_(D1_0.mul_(0.5 * bcast(iv.data_coefs[1], x)))
        return x_next.add_(D1_0.mul_(bcast(iv.alpha_t * iv.phi2, x)))  # 'taylor' (diffusers 'heun')
    r1 = (lams[-2] - lams[-3]) / h
    D1_1 = (Ds[-2] - Ds[-3]).div_(bcast(r1, x))
    dD1 = rsub_(D1_0, D1_1)                                         # D1_0 - D1_1
    D2 = dD1 / bcast(r0 + r1, x)                                    # ~ h^2 D''/2
    D1 = D1_0.add_(dD1.mul_(bcast(r0 / (r0 + r1), x)))              # ~ h D'
    # The reference codes (official, diffusers, k-diffusion) weight D2 by phi3; the Taylor integral of
    # (tau^2/2) D'' needs 2 phi3, so the reference 3M is second order (local error O(h^3), measured slope 2).
    # d2_weight='exact' uses the exact weight (measured order 3); the default keeps reference parity.
    c2 = 2.0 if d2_weight == "exact" else 1.0
    return x_next.add_(D1.mul_(bcast(iv.alpha_t * iv.phi2, x))).sub_(D2.mul_(bcast(c2 * iv.alpha_t * iv.phi3, x)))


def dpmpp_slope(iv: Interval, Ds, lams, order: int):
    """The same update in slope form: the D with x_next = data_step(iv, x, D), the slope a momentum modifier
    averages (2M: D = D0 + (D0 - D1) / (2 r0), the momentum paper's form)."""
    D0 = Ds[-1]
    if order == 1:
        return D0
    r0 = (lams[-1] - lams[-2]) / iv.h
    if order == 2:
        return D0 + (D0 - Ds[-2]) / (2 * r0)
    raise ValueError("the slope form is written for orders 1 and 2")


class DPMppMultistep(Multistep):
    """Multistep DPM-Solver++ on the core (docs/solvers.md#dpm-solver-multistep): `order` steps of history."""

    default_grid = "logSNR"
    defaults = {"lower_order_final": True, "solver_type": "dpmsolver"}
    choices = {"solver_type": ("dpmsolver", "taylor")}
    order = 2   # the formula's order (an `order` option where a subclass offers one)
    d2_weight = "reference"   # 3M's D2 weight (an option of dpmpp-3m)
    momentum_at_first_order = False   # the momentum fork feeds first-order steps m0 and keeps v

    @property
    def history_length(self) -> int:
        return self.order

    def step_order(self, i, plan, iv):
        return multistep_order(i, plan.steps, self.order, self.lower_order_final, iv.to_data)

    def update(self, denoiser, iv, x, hist, p, ctx, i, plan):
        if self.uses_slope:
            return data_step(iv, x, self.slope(dpmpp_slope(iv, hist.Ms, hist.lams, p), p, ctx))
        return dpmpp_multistep_update(iv, x, hist.Ms, hist.lams, p, self.solver_type, self.d2_weight)


@register_solver("dpmpp-2m")
class DPMpp2M(DPMppMultistep):
    """DPM-Solver++(2M): multistep 2nd order, data prediction, 1 NFE a step."""
    family = "exponential integrator"
    nominal_order = order = 2


@register_solver("dpmpp-3m")
class DPMpp3M(DPMppMultistep):
    """DPM-Solver++(3M): multistep, data prediction, 1 NFE a step (reference formula: order 2; d2_weight=exact: 3).

    The default is the formula of the official code, diffusers and k-diffusion (diffusers to 1e-13); its D2 term
    carries half the weight the Taylor expansion needs, so it converges at order 2. `d2_weight=exact` doubles
    that weight and converges at order 3 (a deviation from every reference, offered so the difference can be
    measured). `solver_type` is the official option: 'taylor' changes the second-order warm-up step only.
    """
    family = "exponential integrator"
    order = 3
    defaults = {**DPMppMultistep.defaults, "d2_weight": "reference"}
    choices = {**DPMppMultistep.choices, "d2_weight": ("reference", "exact")}

    @property
    def nominal_order(self):
        return 3 if self.d2_weight == "exact" else 2
