"""Ancestral and singlestep SDE samplers of k-diffusion, in sigma~ (solvers/sigma_view.py; docs/solvers.md).

Each step moves deterministically to sigma_down and adds fresh noise sigma_up z (`ancestral_split`); eta = 0 is the
deterministic method. A step onto sigma~ = 0 adds no noise.
"""
from __future__ import annotations

import math

from .noise_sampler import PATHS, noise_sampler
from .options import Range
from .registry import Solver, register_solver
from .sigma_view import SigmaView, ancestral_split
from .two_stage import TwoStage

ETA = Range(0, math.inf)       # eta > 1 is accepted, as in k-diffusion: sigma_up is capped at sigma_to


class _Ancestral(Solver):
    default_grid = "karras"
    defaults = {"eta": 1.0, "s_noise": 1.0, "noise_path": "steps"}
    choices = {"noise_path": PATHS}
    ranges = {"eta": ETA, "s_noise": Range(0, math.inf)}

    @property
    def stochastic(self):
        return self.eta > 0 and self.s_noise > 0


@register_solver("euler-ancestral")
class EulerAncestral(_Ancestral):
    """Euler ancestral (k-diffusion sample_euler_ancestral); eta = 1 is DDPM ancestral sampling, = ddim:eta=1."""
    family = "stochastic"

    nominal_order = 1

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        ns = noise_sampler(x_T, generator, self.noise_path, v.sigma_max)
        s, x = v.sigmas, v.start(x_T)
        for i in range(plan.steps):
            down, up = ancestral_split(s[i], s[i + 1], self.eta)
            x = x + (down - s[i]) * v.d(x, v.D(x, i), s[i])
            if s[i + 1] > 0:   # k-diffusion draws here also when eta = 0 (times 0): the same stream
                x = x + self.s_noise * up * ns(s[i], s[i + 1])
        return v.finish(x)


@register_solver("dpmpp-2s-ancestral")
class DPMpp2SAncestral(TwoStage, _Ancestral):
    """DPM-Solver++(2S) ancestral (k-diffusion sample_dpmpp_2s_ancestral): the 2S step to sigma_down, then noise."""
    family = "stochastic"

    nominal_order = 2

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        ns = noise_sampler(x_T, generator, self.noise_path, v.sigma_max)
        s, x = v.sigmas, v.start(x_T)
        for i in range(plan.steps):
            D = v.D(x, i)
            down, up = ancestral_split(s[i], s[i + 1], self.eta)
            if down == 0 or plan.evals[i] == 1:    # Euler to sigma_down
                x = x + (down - s[i]) * v.d(x, D, s[i])
            else:                                  # DPM-Solver++(2S), r = 1/2, in lambda = -log sigma~
                h = math.log(s[i] / down)
                s_mid = math.sqrt(s[i] * down)     # the lambda-midpoint of sigma_i and sigma_down
                u = (s_mid / s[i]) * x - math.expm1(-h / 2) * D
                x = (down / s[i]) * x - math.expm1(-h) * v.D_at(u, s_mid)
            if s[i + 1] > 0:
                x = x + self.s_noise * up * ns(s[i], s[i + 1])
        return v.finish(x)


@register_solver("dpmpp-sde")
class DPMppSDE(TwoStage, _Ancestral):
    """DPM-Solver++ SDE (k-diffusion sample_dpmpp_sde): two stochastic stages a step, at lambda_i + r h; the two
    noises are increments of one Brownian path (solvers/noise_sampler.py)."""
    family = "stochastic"

    nominal_order = 2
    defaults = {**_Ancestral.defaults, "r": 0.5}
    ranges = {**_Ancestral.ranges, "r": Range(0, 1, lo_open=True, hi_open=True)}

    def sample(self, denoiser, x_T, plan, generator=None):
        v = SigmaView(denoiser, plan, x_T)
        ns = noise_sampler(x_T, generator, self.noise_path, v.sigma_max)
        s, x = v.sigmas, v.start(x_T)
        for i in range(plan.steps):
            D = v.D(x, i)
            if s[i + 1] == 0 or plan.evals[i] == 1:   # Euler (k-diffusion: only onto sigma = 0, without noise)
                down, up = ancestral_split(s[i], s[i + 1], self.eta)
                x = x + (down - s[i]) * v.d(x, D, s[i])
                if s[i + 1] > 0:
                    x = x + self.s_noise * up * ns(s[i], s[i + 1])
                continue
            lam, lam_next = -math.log(s[i]), -math.log(s[i + 1])
            h = lam_next - lam
            s_mid, fac = math.exp(-(lam + self.r * h)), 1 / (2 * self.r)
            # stage 1: an ancestral step to sigma_s, evaluated there
            down, up = ancestral_split(s[i], s_mid, self.eta)
            x2 = (down / s[i]) * x - math.expm1(lam - (-math.log(down))) * D
            x2 = x2 + self.s_noise * up * ns(s[i], s_mid)
            D2 = v.D_at(x2, s_mid)
            # stage 2: the step to sigma_{i+1} with the mixed prediction
            down, up = ancestral_split(s[i], s[i + 1], self.eta)
            D_mix = (1 - fac) * D + fac * D2
            x = (down / s[i]) * x - math.expm1(lam - (-math.log(down))) * D_mix
            x = x + self.s_noise * up * ns(s[i], s[i + 1])
        return v.finish(x)
