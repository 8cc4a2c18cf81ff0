"""The noise of a stochastic sampler as k-diffusion asks for it: `ns(sigma_a, sigma_b)` returns standard normal z
shaped like x, the normalised Brownian increment (W(sigma_b) - W(sigma_a)) / sqrt|sigma_b - sigma_a| of a
Brownian motion W in sigma~-time (docs/solvers.md#noise).

From a generator (the runner's seed-addressed NoiseStream, or a torch.Generator), each call draws one tensor,
in call order, so a sample's noise does not depend on its batch, shard or device. Two calls from the same
sigma_a where the second interval contains the first (DPM-Solver++ SDE's two stages) are the increments of one
path: the second is the first plus a fresh draw, combined as a Brownian bridge, which is the joint law of
k-diffusion's Brownian tree. A callable passed as `generator` is used as the noise sampler itself (a test
injecting the same noise into a reference).

With `noise_path=tree` a solver draws from one Brownian path per sample over [0, sigma~(T)], the same whatever
the grid (k-diffusion's BrownianTreeNoiseSampler, seed-addressed like every stream: solvers/noise.py), so a
stochastic sampler at two NFEs follows the same path and a fine-step run is the strong reference of a coarse one.
"""
from __future__ import annotations

import math

import torch

from .denoiser import gaussian_like
from .noise import TREE_TAG, NoiseStream, keyed_rows

PATHS = ("steps", "tree")


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


class BrownianTree:
    """ns(sigma_a, sigma_b) = (W(sigma_b) - W(sigma_a)) / sqrt|sigma_b - sigma_a| of one Brownian path W per sample
    on [0, top]: W(top) = sqrt(top) xi_0, and the value at the midpoint of a dyadic interval [l, r] is the bridge
    mean plus sqrt((r - l) / 4) xi_k, node k of a heap (root interval 1, children 2k and 2k + 1), refined until the
    interval is shorter than `tol` and interpolated linearly inside (torchsde's tree, absolute tol 1e-6 in sigma~
    as k-diffusion sets it). xi_k of sample i is keyed by (seed, i, k) only, never by the queries before it."""

    def __init__(self, x, generator, top: float, tol: float = 1e-6):
        if isinstance(generator, NoiseStream):
            self.seed, self.start = generator.seed, generator.start
        else:   # a torch.Generator (or the global RNG) picks the tree, as k-diffusion does
            self.seed, self.start = int(torch.randint(0, 2 ** 62, (), generator=generator)), 0
        self.x, self.top, self.tol = x, float(top), float(tol)
        self.known = {0.0: torch.zeros(x.shape, dtype=torch.float64)}
        self.known[self.top] = self._xi(0) * math.sqrt(self.top)

    def _xi(self, k: int) -> torch.Tensor:
        return torch.from_numpy(keyed_rows(TREE_TAG, self.seed, k, self.start, self.x.shape[0], tuple(self.x.shape[1:])))

    def W(self, s: float) -> torch.Tensor:
        s = min(max(float(s), 0.0), self.top)
        if s in self.known:
            return self.known[s]
        lo, hi, w_lo, w_hi, k = 0.0, self.top, self.known[0.0], self.known[self.top], 1
        while hi - lo > self.tol:
            mid = (lo + hi) / 2
            w_mid = (w_lo + w_hi) / 2 + math.sqrt((hi - lo) / 4) * self._xi(k)
            if s <= mid:
                hi, w_hi, k = mid, w_mid, 2 * k
            else:
                lo, w_lo, k = mid, w_mid, 2 * k + 1
        w = w_lo + (w_hi - w_lo) * ((s - lo) / (hi - lo))
        if len(self.known) > 6:      # the ends of the last queries: a step's end is the next one's start
            self.known = {0.0: self.known[0.0], self.top: self.known[self.top]}
        self.known[s] = w
        return w

    def __call__(self, sigma_a: float, sigma_b: float):
        z = (self.W(sigma_b) - self.W(sigma_a)) / math.sqrt(abs(float(sigma_b) - float(sigma_a)))
        return z.to(dtype=self.x.dtype, device=self.x.device)


def noise_sampler(x, generator=None, path: str = "steps", top: float | None = None):
    """The noise sampler of one `sample` call: `generator` itself when it is one (a callable), else StepNoise, or
    with path='tree' a BrownianTree over [0, top]."""
    if callable(generator):
        return generator
    if path == "tree":
        return BrownianTree(x, generator, top)
    return StepNoise(x, generator)
