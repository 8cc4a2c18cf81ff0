"""DPM-Solver++(2M) SDE and (3M) SDE (Lu et al. 2022b, multistep forms of k-diffusion), in sigma~.

With H = (1 + eta) h over a step of log-SNR length h, the exact solution of the linear part of the SDE is
x~_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x~_i + (1 - e^{-H}) D_i plus noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z;
the divided differences of the previous D's raise the order. eta = 0 is DPM-Solver++(2M)/(3M) (the ODE); eta = 1
is SDE-DPM-Solver++. A step onto sigma~ = 0 returns D. The diffusers order-3 `sde-dpmsolver++` is a different
formula (docs/solvers.md#dpmpp-3m-sde): this one follows k-diffusion.
"""
from __future__ import annotations

import math

from .noise_sampler import PATHS, noise_sampler
from .options import Range
from .registry import Solver, register_solver
from .sigma_view import SigmaView


class _MultistepSDE(Solver):
    default_grid = "karras"
    defaults = {"eta": 1.0, "s_noise": 1.0, "noise_path": "steps"}
    choices = {"noise_path": PATHS}
    ranges = {"eta": Range(0, math.inf), "s_noise": Range(0, math.inf)}

    @property
    def stochastic(self):
        return self.eta > 0 and self.s_noise > 0

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        ns = noise_sampler(x_T, generator, self.noise_path, v.sigma_max)
        s, x = v.sigmas, v.start(x_T)
        Ds, hs = [], []                      # previous D's and log-SNR steps, newest first
        for i in range(plan.steps):
            D = v.D(x, i)
            if s[i + 1] == 0:
                x, h = D, None
            else:
                h = math.log(s[i] / s[i + 1])
                H = (1 + self.eta) * h
                x = (s[i + 1] / s[i]) * math.exp(-self.eta * h) * x - math.expm1(-H) * D
                x = x + self.correction(D, Ds, hs, h, H)
                if self.eta:
                    x = x + ns(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * self.eta * h)) * self.s_noise)
            Ds, hs = [D] + Ds[:1], [h] + hs[:1]
        return v.finish(x)

    def correction(self, D, Ds, hs, h, H):
        raise NotImplementedError


@register_solver("dpmpp-2m-sde")
class DPMpp2MSDE(_MultistepSDE):
    """DPM-Solver++(2M) SDE (k-diffusion sample_dpmpp_2m_sde), solver_type midpoint or heun; eta=0: dpmpp-2m."""
    family = "stochastic"

    nominal_order = 2
    defaults = {**_MultistepSDE.defaults, "solver_type": "midpoint"}
    choices = {**_MultistepSDE.choices, "solver_type": ("midpoint", "heun")}

    def correction(self, D, Ds, hs, h, H):
        if not Ds:
            return 0
        d1 = (D - Ds[0]) * (h / hs[0])           # first divided difference, times h
        if self.solver_type == "heun":
            return (-math.expm1(-H) / -H + 1) * d1  # phi_2(H)
        return 0.5 * -math.expm1(-H) * d1


@register_solver("dpmpp-3m-sde")
class DPMpp3MSDE(_MultistepSDE):
    """DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde); eta=0: the 3M ODE solver in k-diffusion's form."""
    family = "stochastic"

    nominal_order = 3

    def correction(self, D, Ds, hs, h, H):
        if not Ds:
            return 0
        phi2 = math.expm1(-H) / H + 1
        r0 = hs[0] / h
        d1_0 = (D - Ds[0]) / r0
        if len(Ds) < 2 or hs[1] is None:
            return phi2 * d1_0                   # the second step: phi_2 (heun-type), not midpoint
        r1 = hs[1] / h
        d1_1 = (Ds[0] - Ds[1]) / r1
        d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi3 = phi2 / H - 0.5
        return phi2 * d1 - phi3 * d2
