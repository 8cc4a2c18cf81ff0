"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithms 1-2), deterministic.

They integrate dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ (EDM eq. 3 with s(t) = 1) in the scaled variables
x~ = x / alpha, sigma~ = sigma / alpha = e^{-lambda}, so they run on VP and VE models alike.
"""
from __future__ import annotations

import math

from .noise_sampler import noise_sampler
from .options import Range, SpecError
from .registry import Solver, register_solver
from .sigma_view import SigmaView
from .two_stage import TwoStage


class _EDM(Solver):
    default_grid = "karras"

    @staticmethod
    def scaled(g, x):
        """In x's dtype, per grid point: alpha and sigma~ = sigma/alpha; per interval: the step in sigma~ (the float64
        difference, cast)."""
        sg = g.sigmas / g.alphas
        return g.like((g.alphas, sg, sg[1:] - sg[:-1]), x)

    @staticmethod
    def _d(denoiser, x_tilde, at, a, sg):
        """dx~/dsigma~ at x~ (1 NFE): at the Denoiser's time, a alpha and sg sigma~ there."""
        x0 = denoiser.x0(a * x_tilde, at)
        return (x_tilde - x0).div_(sg)


@register_solver("euler")
class Euler(_EDM):
    """Euler in sigma~ (EDM Alg. 1 without churn); identical to DDIM eta=0 on the same grid."""
    family = "singlestep and generic ODE"

    nominal_order = 1

    def sample(self, denoiser, x_T, plan, generator=None):
        g = plan.on(denoiser.schedule)
        (a, sg, dsg), at = self.scaled(g, x_T), g.times(x_T)
        x = x_T / a[0]
        for i in range(plan.steps):    # x += dsg d (EDM Alg. 2 line 6), in place on this loop's own tensors
            x = x.add_(self._d(denoiser, x, at[i], a[i], sg[i]).mul_(dsg[i]))
        return a[-1] * x


@register_solver("heun")
class Heun(TwoStage, _EDM):
    """EDM Heun (2nd order, 2 NFE a step); a step onto sigma=0, or an odd budget's last step, is Euler.
    churn > 0: EDM's stochastic sampler (Alg. 2), see `sample_churn`."""
    family = "singlestep and generic ODE"

    nominal_order = 2
    defaults = {"churn": 0.0, "tmin": 0.0, "tmax": math.inf, "noise": 1.0}
    ranges = {"churn": Range(0, math.inf, allow_inf=False), "tmin": Range(0, math.inf),
              "tmax": Range(0, math.inf, allow_inf=True), "noise": Range(0, math.inf)}

    @property
    def stochastic(self):
        return self.churn > 0

    def check(self):
        if self.tmin > self.tmax:
            raise SpecError(f"solver 'heun': tmin={self.tmin} is above tmax={self.tmax}; churn applies for "
                            "tmin <= sigma~ <= tmax")

    def sample(self, denoiser, x_T, plan, generator=None):
        if self.churn > 0:
            return self.sample_churn(denoiser, x_T, plan, generator)
        g = plan.on(denoiser.schedule)
        (a, sg, dsg), at = self.scaled(g, x_T), g.times(x_T)
        x = x_T / a[0]
        for i in range(plan.steps):    # in place on this loop's own tensors (x, d)
            d = self._d(denoiser, x, at[i], a[i], sg[i])
            if plan.evals[i] == 1:
                x = x.add_(d.mul_(dsg[i]))                                      # Alg. 2 line 6 (Euler)
                continue
            d2 = self._d(denoiser, x + dsg[i] * d, at[i + 1], a[i + 1], sg[i + 1])  # Alg. 2 lines 6 and 9
            x = x.add_(d.add_(d2).mul_(dsg[i]).div_(2))                         # Alg. 2 line 8 (trapezoid)
        return a[-1] * x

    def sample_churn(self, denoiser, x_T, plan, generator=None):
        """EDM Alg. 2 (S_churn = churn, S_tmin/S_tmax = tmin/tmax, S_noise = noise), in sigma~. The divisor of
        S_churn is the number of steps (EDM's N when the grid ends at sigma = 0; k-diffusion's len(sigmas) - 1).
        A churned level is capped at the schedule's top sigma~(T), where EDM's VE networks have none."""
        v = SigmaView(denoiser, plan, x_T)
        ns, s = noise_sampler(x_T, generator), v.sigmas
        x = v.start(x_T)
        for i in range(plan.steps):
            gamma = min(self.churn / plan.steps, math.sqrt(2) - 1) if self.tmin <= s[i] <= self.tmax else 0.0
            gamma = max(0.0, min(gamma, v.sigma_max / s[i] - 1))
            s_hat = s[i] * (1 + gamma)                                                     # line 5
            x = churned_step(v, ns, x, i, s_hat, self.noise, heun=plan.evals[i] == 2)
        return v.finish(x)


def churned_step(v, ns, x, i: int, s_hat: float, s_noise: float, heun: bool):
    """EDM Alg. 2 lines 6-11 in the sigma view: noise from sbar_i up to s_hat (one draw, also when s_hat is
    sbar_i), then an Euler step to sbar_{i+1} and, with `heun`, its trapezoidal correction (shared by `heun`'s
    churn and Restart's main loop)."""
    s = v.sigmas
    x_hat = x + math.sqrt(s_hat ** 2 - s[i] ** 2) * s_noise * ns(s[i], s_hat)      # line 6
    d = v.d(x_hat, v.D(x_hat, i) if s_hat == s[i] else v.D_at(x_hat, s_hat), s_hat)  # line 7
    x = x_hat + (s[i + 1] - s_hat) * d                                              # line 8 (Euler)
    if heun:                                                                        # lines 9-11 (Heun)
        d2 = v.d(x, v.D(x, i + 1), s[i + 1])
        x = x_hat + (s[i + 1] - s_hat) * (d + d2) / 2
    return x
