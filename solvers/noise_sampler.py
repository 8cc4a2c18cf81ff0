"""The noise of a stochastic sampler as k-diffusion asks for it: `ns(sigma_a, sigma_b)` returns standard normal z
shaped like x, the normalised Brownian increment (W(sigma_b) - W(sigma_a)) / sqrt|sigma_b - sigma_a| of a
Brownian motion W in sigma~-time (docs/solvers.md#noise).

From a generator (the runner's seed-addressed NoiseStream, or a torch.Generator), each call draws one tensor,
in call order, so a sample's noise does not depend on its batch, shard or device. Two calls from the same
sigma_a where the second interval contains the first (DPM-Solver++ SDE's two stages) are the increments of one
path: the second is the first plus a fresh draw, combined as a Brownian bridge, which is the joint law of
k-diffusion's Brownian tree. A callable passed as `generator` is used as the noise sampler itself (a test
injecting the same noise into a reference).
"""
from __future__ import annotations

import math

from .denoiser import gaussian_like


class StepNoise:
    """ns(sigma_a, sigma_b) from a generator; see the module docstring."""

    def __init__(self, x, generator=None):
        self.x, self.generator, self.last = x, generator, None

    def __call__(self, sigma_a: float, sigma_b: float):
        sigma_a, sigma_b = float(sigma_a), float(sigma_b)
        z = gaussian_like(self.x, self.generator)
        if self.last is not None:
            a0, b0, z0 = self.last
            if a0 == sigma_a and sigma_b < b0 < sigma_a:   # [b, a] contains [b0, a]: W(a) - W(b0) is known
                z = (z0 * math.sqrt(sigma_a - b0) + z * math.sqrt(b0 - sigma_b)) / math.sqrt(sigma_a - sigma_b)
        self.last = (sigma_a, sigma_b, z)
        return z


def noise_sampler(x, generator=None):
    """The noise sampler of one `sample` call: `generator` itself when it is one (a callable), else StepNoise."""
    if callable(generator):
        return generator
    return StepNoise(x, generator)
