"""SA-Solver (Xue et al. 2023): stochastic Adams predictor-corrector in data prediction, in sigma~
(solvers/sigma_view.py; docs/solvers.md#sa-solver).

With lambda = -log sigma~, the reverse SDE family of SA-Solver (the probability-flow ODE plus tau^2 times the
Langevin correction, noise amplitude tau; tau = 0 is the ODE, tau = 1 the reverse SDE) solved by variation of
constants over a step s -> t of log-SNR length h, with a = 1 + tau^2 and D replaced by the Lagrange interpolant
l_k of stored evaluations at nodes mu_k:

    x~_t = (sigma_t/sigma_s) e^{-tau^2 h} x~_s + sum_k c_k D(mu_k) + sigma_t sqrt(1 - e^{-2 tau^2 h}) z,
    c_k = a int_{lambda_s}^{lambda_t} e^{a (lambda - lambda_t)} l_k(lambda) dlambda.

Predictor (stochastic Adams-Bashforth): nodes lambda_i, lambda_{i-1}, ...; corrector (stochastic Adams-Moulton):
nodes lambda_{i+1}, lambda_i, ..., run once D_{i+1} = D(x~^p_{i+1}) is known, with the predictor's own tau and
noise z_i; D_{i+1} is not evaluated again. Order 2 uses the reference's simplified weights (below). tau is
`tau` inside the window tau_start <= u <= tau_end of the step's start point, else 0 (the ODE); u is the time as a
fraction of the training range (training step n / N on a discrete schedule, t/T on a continuous one).

Orders warm up as the history allows; `lower_order_final` (the reference's default, applied for every number of
steps) lowers them at the end, p_i <= N - i and c_i <= N - i + 1, so the last step is a first-order predictor.
A step onto sigma~ = 0 (a grid ending at the data point) returns D, without noise. NFE = steps; no final denoise.
"""
from __future__ import annotations

import math

import numpy as np

from .noise_sampler import noise_sampler
from .options import Range, SpecError
from .registry import Solver, register_solver
from .sigma_view import SigmaView


def exp_moments(x: float, p: int) -> list[float]:
    """I_m = x int_0^1 e^{-x w} w^m dw = gamma(m+1, x) / x^m, m < p: the weights of (v/h)^m, v = lambda_t - lambda.
    A series for small x (no cancellation), else the recurrence I_m = m I_{m-1} / x - e^{-x} (stable for x > m)."""
    if x >= 4:
        out = [-math.expm1(-x)]
        for m in range(1, p):
            out.append(m * out[-1] / x - math.exp(-x))
        return out
    out = []
    for m in range(p):       # I_m = x e^{-x} sum_j x^j / ((m+1)(m+2)...(m+1+j))
        term = total = 1 / (m + 1)
        j = 0
        while term > 1e-17 * total:
            j += 1
            term *= x / (m + 1 + j)
            total += term
        out.append(x * math.exp(-x) * total)
    return out


def sa_weights(nodes, lam_s: float, lam_t: float, a: float) -> list[float]:
    """c_k for the nodes mu_k (Lagrange basis l_k) over [lam_s, lam_t], exactly, except for two nodes: there the
    reference (diffusers' port by the SA-Solver authors) replaces e^{a(lambda - lambda_t)} by 1 in the slope term,
    (1 - e^{-ah}) D(lam_s) + a h^2/2 (D(mu_0) - D(mu_1)) / (mu_0 - mu_1), a change of O(h^3)."""
    h = lam_t - lam_s
    if len(nodes) == 2:
        slope = a * h * h / 2 / (nodes[0] - nodes[1])
        base = -math.expm1(-a * h)
        at_s = 0 if nodes[0] == lam_s else 1        # the node at lam_s: the predictor's first, the corrector's second
        return [base * (k == at_s) + (slope if k == 0 else -slope) for k in range(2)]
    s = [(lam_t - mu) / h for mu in nodes]          # nodes in w = (lambda_t - lambda) / h, the step in [0, 1]
    moments = exp_moments(a * h, len(nodes))
    out = []
    for k, sk in enumerate(s):
        others = [sj for j, sj in enumerate(s) if j != k]
        poly = np.polynomial.polynomial.polyfromroots(others) / math.prod(sk - sj for sj in others)
        out.append(float(sum(cm * im for cm, im in zip(poly, moments))))
    return out


@register_solver("sa-solver")
class SASolver(Solver):
    """SA-Solver (diffusers SASolverScheduler): stochastic Adams predictor-corrector, tau inside a time window."""
    family = "stochastic"

    default_grid = "logSNR"
    defaults = {"predictor_order": 2, "corrector_order": 2, "tau": 1.0, "tau_start": 0.2, "tau_end": 0.8,
                "lower_order_final": True}
    ranges = {"predictor_order": (1, 4), "corrector_order": (0, 4), "tau": Range(0, math.inf),
              "tau_start": (0, 1), "tau_end": (0, 1)}

    def check(self):
        if self.tau_start > self.tau_end:
            raise SpecError(f"solver '{self.name}': need tau_start <= tau_end, got {self.tau_start} > {self.tau_end}")

    @property
    def stochastic(self):
        return self.tau > 0

    @property
    def nominal_order(self):
        """The corrector's order when there is one (it sets the order of every state carried on; the predictor's
        error enters it through D_{i+1} times O(h): order min(C, P + 1)), else the predictor's."""
        if self.corrector_order:
            return min(self.corrector_order, self.predictor_order + 1)
        return self.predictor_order

    @property
    def history_length(self):
        return max(self.predictor_order, self.corrector_order)

    def taus(self, schedule, grid) -> list[float]:
        """tau at every grid point: `tau` where the time fraction u lies in [tau_start, tau_end]."""
        n = schedule.num_train_steps
        u = (grid * n - 1) / n if n else grid / schedule.T   # discrete: step n = tN - 1 (exact) over N: 200/1000
        return [self.tau if self.tau_start <= v <= self.tau_end else 0.0 for v in u.tolist()]

    def sample(self, denoiser, x_T, plan, generator=None):
        v, ns = SigmaView(denoiser, plan, x_T), noise_sampler(x_T, generator)
        s, x, N = v.sigmas, v.start(x_T), plan.steps
        lam = [-math.log(si) if si > 0 else math.inf for si in s]
        taus = self.taus(denoiser.schedule, plan.grid)
        P, C = self.predictor_order, self.corrector_order
        Ds, pending = [], None               # D's newest first; the last predictor's (x_i, z_i, i, c_i)
        for i in range(N):
            Ds = [v.D(x, i)] + Ds[:max(P, C) - 1]
            if pending:                      # correct x~_i (0 NFE) with D_i, the step's tau and noise
                x_prev, z, j, c = pending
                x = self.move(x_prev, j, taus[j], s, lam, [lam[i - k] for k in range(c)], Ds[:c], z)
            if s[i + 1] == 0:                # the jump to the data point (first order): D itself, no noise
                x, pending = Ds[0], None
                continue
            p, c = min(P, i + 1), min(C, i + 2)          # warm-up: the evaluations there are
            if self.lower_order_final:                    # and lower orders at the end, for every N
                p, c = min(p, N - i), min(c, N - i + 1)
            z = ns(s[i], s[i + 1])           # one draw a step, also where tau = 0 (diffusers' stream)
            pending = (x, z, i, c) if c > 0 and i < N - 1 else None
            x = self.move(x, i, taus[i], s, lam, [lam[i - k] for k in range(p)], Ds[:p], z)
        return v.finish(x)

    @staticmethod
    def move(x, i, tau, s, lam, nodes, values, z):
        """x~_{i+1} from x~_i with the weights of `nodes` on `values`, amplitude tau and noise z."""
        h = lam[i + 1] - lam[i]
        c = sa_weights(nodes, lam[i], lam[i + 1], 1 + tau * tau)
        out = (s[i + 1] / s[i]) * math.exp(-tau * tau * h) * x + sum(ck * Dk for ck, Dk in zip(c, values))
        if tau:
            out = out + (s[i + 1] * math.sqrt(-math.expm1(-2 * tau * tau * h))) * z
        return out
