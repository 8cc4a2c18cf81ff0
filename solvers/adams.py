"""Adams-Bashforth in sigma~ on the probability-flow ODE dx~/dsigma~ = (x~ - D) / sigma~ (solvers/sigma_view.py):
LMS (k-diffusion sample_lms), iPNDM and iPNDM-v (Zhang & Chen 2023, as zju-pi/diff-sampler codes them).

x~_{i+1} = x~_i + sum_j c_ij d_{i-j}: one evaluation a step, the last `order` derivatives kept, the order
warming up 1, 2, ... . LMS integrates the Lagrange interpolant of the derivatives over the step exactly (the
variable-step Adams-Bashforth method); iPNDM uses the constant-step AB coefficients on any grid (order 2 on a
Karras grid); iPNDM-v uses diff-sampler's variable-step coefficients verbatim, which are not the exact ones beyond
order 2 (docs/solvers.md#ipndm).
"""
from __future__ import annotations

import numpy as np

from .registry import Solver, register_solver
from .sigma_view import SigmaView

GAUSS_X, GAUSS_W = np.polynomial.legendre.leggauss(3)
AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


class _Adams(Solver):
    default_grid = "karras"
    defaults = {"order": 4}
    ranges = {"order": (1, 4)}

    @property
    def nominal_order(self):
        return self.order

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        s, x = v.sigmas, v.start(x_T)
        ds = []                                     # derivatives, newest first
        for i in range(plan.steps):
            ds = [v.d(x, v.D(x, i), s[i])] + ds[:self.order - 1]
            c = self.coefficients(s, i, len(ds))
            x = x + sum(cj * dj for cj, dj in zip(c, ds))
        return v.finish(x)

    def coefficients(self, s, i, p):
        """c_i0..c_i(p-1) of step i at order p (the step length included)."""
        raise NotImplementedError


@register_solver("lms")
class LMS(_Adams):
    """Linear multistep in sigma~ (k-diffusion sample_lms): exact variable-step Adams-Bashforth, order <= 4."""
    family = "linear multistep"

    def coefficients(self, s, i, p):
        """The integral over [sigma_i, sigma_{i+1}] of each node's Lagrange basis polynomial, by 3-point
        Gauss-Legendre (exact to degree 5; these are degree <= 3)."""
        nodes = [s[i - k] for k in range(p)]
        tau = (s[i] + s[i + 1]) / 2 + (s[i + 1] - s[i]) / 2 * GAUSS_X
        w = (s[i + 1] - s[i]) / 2 * GAUSS_W
        return [float(np.sum(w * np.prod([(tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(p) if k != j]
                                          or [np.ones(3)], axis=0))) for j in range(p)]


@register_solver("ipndm")
class IPNDM(_Adams):
    """iPNDM (diff-sampler ipndm_sampler): Adams-Bashforth with constant-step coefficients, order <= 4."""
    family = "linear multistep"

    def coefficients(self, s, i, p):
        return [(s[i + 1] - s[i]) * b for b in AB[p]]


@register_solver("ipndm-v")
class IPNDMV(_Adams):
    """iPNDM-v (diff-sampler ipndm_v_sampler): its variable-step coefficients, verbatim (not exact beyond order 2)."""
    family = "linear multistep"

    def coefficients(self, s, i, p):
        h = s[i + 1] - s[i]
        if p == 1:
            return [h]
        h1 = s[i] - s[i - 1]
        c1, c2 = (2 + h / h1) / 2, -(h / h1) / 2                       # exact AB2
        if p == 2:
            return [h * c1, h * c2]
        h2 = s[i - 1] - s[i - 2]
        t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
        if p == 3:
            return [h * (c1 + t1), h * (c2 - (1 + h1 / h2) * t1), h * t1 * h1 / h2]
        h3 = s[i - 2] - s[i - 3]
        q = h1 * (h1 + h2) / (h2 * (h2 + h3))
        t2 = ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2))) \
            * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
        return [h * (c1 + t1 + t2), h * (c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2),
                h * (t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2), h * (-t2 * q * h1 / h2)]
