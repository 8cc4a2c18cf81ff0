"""DEIS (Zhang & Chen 2023): the multistep exponential integrator of the noise-prediction ODE, in sigma~.

In the sigma view (solvers/sigma_view.py) the exponential integrator of eps is a plain quadrature in sigma~:
x~_{i+1} = x~_i + integral over [sigma~_i, sigma~_{i+1}] of eps(sigma~) dsigma~, eps = d = (x~ - D)/sigma~. DEIS
replaces eps by the polynomial through the last p evaluations, p = min(order, i + 1), in an interpolation
variable v, so

    x~_{i+1} = x~_i + sum_j C_ij eps_{i-j},   C_ij = integral_{sigma~_i}^{sigma~_{i+1}} l_j(v(sigma~)) dsigma~,

l_j being node j's Lagrange basis polynomial over v_i, v_{i-1}, ..., v_{i-p+1}. One evaluation a step, no final
denoise. (VP form: x_{i+1} = (alpha_{i+1}/alpha_i) x_i + alpha_{i+1} sum_j C_ij eps_{i-j}.)

variant=tab (the paper's tAB-r with r = order - 1; tAB3 by default): v is the schedule's time t.
  quadrature=exact: v = the grid's own times, integrals to rounding (composite Gauss-Legendre in u = sqrt(t),
    where sigma~(t) is smooth at t = 0; split at a discrete schedule's training steps, the kinks of its
    log alpha; the derivative of sigma~ is avoided by integrating by parts). On a VE schedule t = sigma~, so this
    is `lms`.
  quadrature=reference: zju-pi/diff-sampler's coefficients, for parity with its DEIS-tAB numbers: v = its VP
    time of sigma~ (a VP-linear map with fixed constants, whatever the model), and its quadrature: a sum over
    10,000 equispaced points including both ends, each weighted interval/10,000 (about 1e-4 off the integral).
variant=logrho (diffusers DEISMultistepScheduler): v = log sigma~, integrated exactly (32-point Gauss-Legendre in
  log sigma~ on a polynomial times e^v: converged to rounding, without the cancellation of diffusers' closed-form
  antiderivatives at small steps); order <= 3 in diffusers, 4 here too.
  lower_order_final: with fewer than 15 steps the last step is first order and the one before at most second
  (diffusers' rule). A step onto sigma~ = 0 (a grid ending at the data point) is first order: the jump to D.

Step 0 (and every first-order step) is Euler in sigma~: x~ + (sigma~_{i+1} - sigma~_i) eps_i, i.e. DDIM.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .options import SpecError
from .plan import PlanError
from .registry import Solver, register_solver
from .schedules import F64
from .sigma_view import SigmaView

GL16 = np.polynomial.legendre.leggauss(16)
GL32 = np.polynomial.legendre.leggauss(32)
PANELS = 8                 # equal panels in u = sqrt(t) per step (exact tab quadrature)
REF_POINTS = 10_000        # diff-sampler's quadrature points per step
# diff-sampler's VP map of sigma~ (its edm2t): epsilon_s, sigma_min, sigma_max of its EDM setting
REF_EPS, REF_SMIN, REF_SMAX = 1e-3, 0.002, 80


def basis(nodes, j: int, x):
    """Node j's Lagrange basis polynomial over `nodes` at x, in product form (no monomial expansion)."""
    out = np.ones_like(x)
    for k, node in enumerate(nodes):
        if k != j:
            out = out * ((x - node) / (nodes[j] - node))
    return out


def basis_slope(nodes, j: int, x):
    """Its derivative: sum over m != j of the product over k != j, m of (x - t_k), over prod_{k != j} (t_j - t_k)."""
    others = [k for k in range(len(nodes)) if k != j]
    total = np.zeros_like(x)
    for m in others:
        term = np.ones_like(x)
        for k in others:
            if k != m:
                term = term * (x - nodes[k])
        total = total + term
    return total / np.prod([nodes[j] - nodes[k] for k in others])


def tab_exact(schedule, t: np.ndarray, s: list, orders: list) -> list:
    """C_ij with v = t, exact to rounding: by parts, C_ij = sbar_{i+1} l_j(t_{i+1}) - sbar_i [j = 0]
    - integral_{t_i}^{t_{i+1}} sbar(tau) l_j'(tau) dtau, the last integral in u = sqrt(tau)."""
    kinks = np.zeros(0)
    if schedule.num_train_steps is not None:   # log alpha is piecewise linear between training steps
        kinks = np.sqrt(schedule.t_of_step(torch.arange(-1, schedule.num_train_steps, dtype=F64)).numpy())
    u = np.sqrt(t)
    quad = []                                  # (u points, signed weights) of each step
    for i, p in enumerate(orders):
        if p == 1:
            quad.append(None)
            continue
        a, b = u[i], u[i + 1]
        edges = np.concatenate([np.linspace(a, b, PANELS + 1), kinks[(kinks < a) & (kinks > b)]])
        edges = np.sort(edges)[::-1]           # a = edges[0] > ... > edges[-1] = b
        lo, hi = edges[1:, None], edges[:-1, None]
        x = ((hi + lo) / 2 + (lo - hi) / 2 * GL16[0]).ravel()
        w = ((lo - hi) / 2 * GL16[1]).ravel()  # negative: the integral runs from u_i down to u_{i+1}
        quad.append((x, w))
    pts = [q[0] for q in quad if q is not None]
    if pts:
        tau_all = np.concatenate(pts) ** 2
        sbar_all = torch.exp(-schedule.lambda_(torch.as_tensor(tau_all, dtype=F64))).numpy()
    C, at = [], 0
    for i, p in enumerate(orders):
        if p == 1:
            C.append([s[i + 1] - s[i]])
            continue
        x, w = quad[i]
        tau, sbar = x ** 2, sbar_all[at:at + len(x)]
        at += len(x)
        nodes = t[i - np.arange(p)]
        row = []
        for j in range(p):
            by_parts = np.sum(w * sbar * basis_slope(nodes, j, tau) * 2 * x)   # dtau = 2u du
            row.append(s[i + 1] * float(basis(nodes, j, np.float64(t[i + 1]))) - (s[i] if j == 0 else 0.0)
                       - by_parts)
        C.append(row)
    return C


def reference_constants():
    """diff-sampler's VP constants (beta_d, beta_min, beta_1 - beta_min), with its precision: the sigma_min term
    log(sigma_min^2 + 1)/epsilon_s is formed in float32 (sigma_min = 0.002 is a float32 tensor there), the rest in
    float64 (sigma_max = 80 is an integer). beta_min, a difference of two numbers near 8.76, is 1% off its
    all-float64 value, which moves the coefficients by ~1e-6."""
    f32 = np.float32
    lo = float(np.log(f32(REF_SMIN) ** 2 + f32(1)) / f32(REF_EPS))
    hi = math.log(REF_SMAX ** 2 + 1)
    beta_d = 2 * (lo - hi) / (REF_EPS - 1)
    beta_min = hi - 0.5 * beta_d
    return beta_d, beta_min, (beta_d + beta_min) - beta_min


def tab_reference(s: list, orders: list) -> list:
    """diff-sampler's coefficients: v = its VP time tv(sbar) = (sqrt(beta_min^2 + 2 beta_d log(sbar^2 + 1))
    - beta_min)/beta_d, and C_ij = sum over tau in linspace(tv_i, tv_{i+1}, 10^4) (both ends) of
    l_j(tau) dsbar/dtau (tv_{i+1} - tv_i)/10^4, dsbar/dtau = (b tau + beta_min)/(2 sqrt(abar (1 - abar))),
    abar = exp(-b tau^2/2 - beta_min tau), b = beta_1 - beta_min. (diff-sampler evaluates this sum in float32,
    torch.linspace's default dtype: ~1e-6 relative from ours, which is float64.)"""
    beta_d, beta_min, b = reference_constants()
    sb = np.asarray(s, dtype=np.float64)
    tv = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log(sb ** 2 + 1)) - beta_min) / beta_d
    C = []
    for i, p in enumerate(orders):
        if p == 1:
            C.append([s[i + 1] - s[i]])
            continue
        tau = np.linspace(tv[i], tv[i + 1], REF_POINTS)
        abar = np.exp(-0.5 * b * tau ** 2 - beta_min * tau)
        f = 0.5 * (b * tau + beta_min) / np.sqrt(abar * (1 - abar)) * ((tv[i + 1] - tv[i]) / REF_POINTS)
        nodes = tv[i - np.arange(p)]
        C.append([float(np.sum(f * basis(nodes, j, tau))) for j in range(p)])
    return C


def logrho_coefficients(s: list, i: int, p: int) -> list:
    """C_ij with v = log sbar: sbar_i * integral_0^H l_j(log sbar_i + r) e^r dr, H = log(sbar_{i+1}/sbar_i),
    32-point Gauss-Legendre (the integrand is entire; no cancellation between antiderivative values)."""
    if p == 1:
        return [s[i + 1] - s[i]]
    H = math.log(s[i + 1] / s[i])
    r = H / 2 * (1 + GL32[0])
    w = H / 2 * GL32[1] * np.exp(r)
    nodes = np.array([math.log(s[i - k] / s[i]) for k in range(p)])   # log sbar relative to log sbar_i
    return [s[i] * float(np.sum(w * basis(nodes, j, r))) for j in range(p)]


@register_solver("deis")
class DEIS(Solver):
    """DEIS: multistep exponential integrator, eps interpolated in t (tab: tAB3) or log sigma~ (logrho: diffusers)."""
    family = "exponential integrator"

    default_grid = "time_quadratic"
    defaults = {"variant": "tab", "order": 4, "quadrature": "exact", "lower_order_final": True}
    choices = {"variant": ("tab", "logrho"), "quadrature": ("exact", "reference")}
    ranges = {"order": (1, 4)}

    @property
    def nominal_order(self):
        return self.order

    @property
    def history_length(self) -> int:
        return self.order

    def check(self):
        if self.variant == "logrho" and self.quadrature == "reference":
            raise SpecError("option quadrature=reference for solver 'deis' applies to variant=tab only "
                            "(diff-sampler's rule); variant=logrho integrates exactly, as diffusers does")
        if self.variant == "tab" and not self.lower_order_final:
            raise SpecError("option lower_order_final=false for solver 'deis' applies to variant=logrho only "
                            "(diffusers' rule); variant=tab never lowers its final orders, as diff-sampler")

    def plan_on(self, schedule, grid):
        if self.quadrature == "reference" and float(schedule.sigma(grid[-1])) == 0.0:
            raise PlanError("solver 'deis:quadrature=reference' (diff-sampler's coefficients) cannot step onto "
                            "sigma = 0 (its integrand diverges there): use a grid ending at t_min, e.g. "
                            "time_quadratic or karras, or quadrature=exact")
        return super().plan_on(schedule, grid)

    def orders(self, s: list) -> list:
        """The number of interpolation points of each step: the warm-up min(order, i + 1); logrho also lowers
        the last two steps of a plan shorter than 15 (lower_order_final) and makes a step onto 0 first order."""
        n, out = len(s) - 1, []
        for i in range(n):
            p = min(self.order, i + 1)
            if self.variant == "logrho":
                if self.lower_order_final and n < 15:
                    p = 1 if i == n - 1 else min(p, 2) if i == n - 2 else p
                if s[i + 1] == 0:
                    p = 1
            out.append(p)
        return out

    def coefficients(self, schedule, plan, s: list) -> list:
        orders = self.orders(s)
        if self.variant == "logrho":
            return [logrho_coefficients(s, i, p) for i, p in enumerate(orders)]
        if self.quadrature == "reference":
            if s[-1] == 0:
                raise PlanError("solver 'deis:quadrature=reference' cannot step onto sigma = 0")
            return tab_reference(s, orders)
        return tab_exact(schedule, plan.grid.to(F64).cpu().numpy(), s, orders)

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        s, x = v.sigmas, v.start(x_T)
        C = self.coefficients(denoiser.schedule, plan, s)
        eps = []                                   # eps = d at the last grid points, newest first
        for i in range(plan.steps):
            eps = [v.d(x, v.D(x, i), s[i])] + eps[:self.order - 1]
            x = x + sum(c * e for c, e in zip(C[i], eps))
        return v.finish(x)
