"""UniPC (Zhao et al. 2023): unified predictor-corrector, multistep, data prediction, B(h) variants.

Step t_{i-1} -> t_i of order p with the history M_0 = x0 at t_{i-1}, M_k = x0 at t_{i-1-k} (paper eqs. 5-8 in
the form of the official code, docs/solvers.md#unipc):
    hh = -h,  r_k = (lambda_{i-1-k} - lambda_{i-1}) / h (< 0),  D_k = (M_k - M_0) / r_k,
    B = hh (bh1) or e^hh - 1 (bh2),  b_k = k! psi_{k+1}(hh) / B,  R[j][k] = r_k^j  (r_p = 1),
    UniP-p:  x~ = base - alpha_t B sum_{k<p} rho^P_k D_k,          R[:p-1, :p-1] rho^P = b[:p-1]
    UniC-p:  x^c = base - alpha_t B (sum_{k<p} rho^C_k D_k + rho^C_p (M_t - M_0)),   R rho^C = b
with base = (sigma_t/sigma_s) x - alpha_t psi_1(hh) M_0 (the DDIM step). The corrector's M_t = x0(x~, t_i) is
the evaluation the next step needs anyway: it is pushed to the history and the model is not evaluated again at
x^c, so the corrector is free and NFE = steps.
"""
from __future__ import annotations

import math

import torch

from .denoiser import bcast
from .exponential import Interval, data_step, multistep_order
from .multistep import Multistep
from .registry import register_solver


def unipc_rhos(hh, rks, variant: str, corrector: bool):
    """(B(h), rho) for UniP (len(rks)+1 = p, rho of length p-1) or UniC (rho of length p).

    hh = -h; rks = [r_1 .. r_{p-1}]; per-sample (N,) values (a modifier moved the times) solve one system per
    sample, rho then has shape (N, p). The short-cuts rho^P = [0.5] for p = 2 and rho^C = [0.5] for p = 1 are
    the official code's and diffusers' (spec pitfall 5): they make UniP-2/bh2 exactly DPM-Solver++(2M).
    """
    rks = [torch.as_tensor(rk, dtype=torch.float64) for rk in rks]
    hh = torch.as_tensor(hh, dtype=torch.float64)
    hh = hh.expand(torch.broadcast_shapes(hh.shape, *(rk.shape for rk in rks)))
    p = len(rks) + 1
    B = hh if variant == "bh1" else torch.expm1(hh)
    # psi_1 = e^hh - 1, psi_{k+1} = psi_k / hh - 1/k!;  b_k = k! psi_{k+1} / B
    psi, b = torch.expm1(hh), []
    for k in range(1, p + 1):
        psi = psi / hh - 1.0 / math.factorial(k)
        b.append(math.factorial(k) * psi / B)
    b = torch.stack(b, dim=-1)
    r = torch.stack([rk.expand(hh.shape) for rk in rks]
                    + [torch.ones(hh.shape, dtype=torch.float64)], dim=-1)
    R = torch.stack([r ** j for j in range(p)], dim=-2)      # R[..., j, k] = r_k^j
    half = torch.full((*hh.shape, 1), 0.5, dtype=torch.float64)
    if corrector:
        rho = half if p == 1 else torch.linalg.solve(R, b)
    else:
        rho = half if p == 2 else torch.linalg.solve(R[..., :-1, :-1], b[..., :-1])
    return B, rho


def unipc_update(iv: Interval, x, Ms, lams, p: int, variant: str, M_t=None):
    """UniP-p from the newest history point (M_t None) or UniC-p with the model output M_t at the target.

    Ms, lams: data predictions and lambdas of the history, oldest first (at least p entries)."""
    M0 = Ms[-1]
    base = data_step(iv, x, M0)
    if p == 1 and M_t is None:
        return base
    rks = [(lams[-1 - k] - lams[-1]) / iv.h for k in range(1, p)]
    B, rho = unipc_rhos(-iv.h, rks, variant, corrector=M_t is not None)
    diffs = [(Ms[-1 - k] - M0) / bcast(rk, x) for k, rk in enumerate(rks, start=1)]
    if M_t is not None:
        diffs.append(M_t - M0)   # the corrector's r_p = 1 term
    res = sum(bcast(rho[..., k], x) * d for k, d in enumerate(diffs))
    return base - bcast(iv.alpha_t * B, x) * res


@register_solver("unipc")
class UniPC(Multistep):
    """UniPC multistep predictor-corrector (data prediction, bh1/bh2), 1 NFE a step; default UniPC-3 bh1 logSNR.

    Defaults: the paper's configuration for pixel-space unconditional models (its CIFAR-10 ScoreSDE result,
    FID 3.87 at NFE 10): order 3, variant bh1, logSNR grid, lower_order_final, corrector on. (diffusers
    defaults to order 2 and bh2, which it recommends for guided sampling: `unipc:order=2,variant=bh2`.)

    Order plan: warm-up p = min(order, i) for step i = 1..M; lower_order_final gives p = min(p, M + 1 - i)
    at every step, as diffusers and the official code do (no '< 15 steps' threshold, unlike DPM-Solver++).
    The last step is a predictor only (no evaluation), so NFE = M; `corrector=false` drops every corrector
    (the evaluation at the predicted point is still made for the next step), NFE unchanged.

    Deviation from the reference code: a step onto sigma = 0 (diffusers' spacings end there) is first order
    even with lower_order_final=false; diffusers would divide by r_k = 0 there and return NaN.
    """
    family = "exponential integrator"

    nominal_order = 3
    default_grid = "logSNR"
    defaults = {"order": 3, "variant": "bh1", "corrector": True, "lower_order_final": True}
    choices = {"order": (1, 2, 3), "variant": ("bh1", "bh2")}

    final_threshold = None   # lower_order_final at any step count (None); DPM-Solver++'s rule is 15
    offers = ("model_time", "adjust_history")   # its update is not a first-order step fed a slope

    @property
    def history_length(self) -> int:
        return self.order

    @property
    def corrects(self) -> bool:
        return self.corrector

    def step_order(self, i, plan, iv):
        threshold = self.final_threshold or plan.steps + 1
        return multistep_order(i, plan.steps, self.order, self.lower_order_final, iv.to_data,
                               final_threshold=threshold)

    def update(self, denoiser, iv, x, hist, p, ctx, i, plan):
        """UniP-p from the newest history point."""
        return unipc_update(iv, x, hist.Ms, hist.lams, p, self.variant)

    def correct(self, iv, x, hist, p, M_t):
        """UniC-p with the evaluation M_t at the predicted point: free, that evaluation is the next step's."""
        return unipc_update(iv, x, hist.Ms, hist.lams, p, self.variant, M_t)
