"""Shared math of the exponential-integrator family (DDIM, DPM-Solver, DPM-Solver++, UniPC, ...).

Step s -> t with h = lambda_t - lambda_s > 0. Data-prediction phi-functions (as the reference code writes
them): phi1 = e^{-h} - 1 (negative), phi2 = phi1/h + 1, phi3 = phi2/h - 1/2. Noise-prediction:
psi1 = e^{h} - 1, psi2 = psi1/h - 1, psi3 = psi2/h - 1/2. A target with sigma_t = 0 (t = 0) has h = inf;
the first-order steps below stay finite there, higher orders must not be used for such a step.
"""
from __future__ import annotations

from functools import cached_property

import torch

from .denoiser import bcast
from .schedules import as_t


class Interval:
    """Schedule quantities of one step s -> t (float64; scalars or per-sample (N,) tensors). Each phi/psi function
    is computed once, when first read. A plan's intervals between grid points come from its table
    (`GridSchedule`, `Interval.known`) instead of the schedule."""

    def __init__(self, schedule, s, t):
        s, t = as_t(s), as_t(t)
        at_t = (t, *schedule.alpha_sigma_lambda(t))
        self._set((s, *schedule.alpha_sigma_lambda(s)), at_t, bool(torch.all(at_t[2] == 0)))

    @classmethod
    def known(cls, s: tuple, t: tuple, to_data: bool, h=None, **cached) -> "Interval":
        """The interval from quantities computed already (a GridSchedule's): s and t as (time, alpha, sigma,
        lambda), whether sigma_t is 0, h, and any of the cached properties (phi1, data_coefs, ...)."""
        iv = cls.__new__(cls)
        iv._set(s, t, to_data, h)
        iv.__dict__.update(cached)
        return iv

    def _set(self, s: tuple, t: tuple, to_data: bool, h=None):
        (self.s, self.alpha_s, self.sigma_s, self.lam_s), (self.t, self.alpha_t, self.sigma_t, self.lam_t) = s, t
        self.h = self.lam_t - self.lam_s if h is None else h
        self.to_data = to_data

    # phi functions of h (data prediction) and psi functions (noise prediction)
    @cached_property
    def phi1(self):
        return torch.expm1(-self.h)

    @cached_property
    def phi2(self):
        return self.phi1 / self.h + 1.0

    @cached_property
    def phi3(self):
        return self.phi2 / self.h - 0.5

    @cached_property
    def psi1(self):
        return torch.expm1(self.h)

    @cached_property
    def psi2(self):
        return self.psi1 / self.h - 1.0

    @cached_property
    def psi3(self):
        return self.psi2 / self.h - 0.5

    # the first-order steps' coefficients
    @cached_property
    def data_coefs(self):
        """(sigma_t/sigma_s, alpha_t phi1): data_step's x_t = c_x x_s - c_D D."""
        return self.sigma_t / self.sigma_s, self.alpha_t * self.phi1

    @cached_property
    def noise_coefs(self):
        """(alpha_t/alpha_s, alpha_t sigma_s/alpha_s (-phi1)): noise_step's x_t = c_x x_s - c_e eps."""
        return self.alpha_t / self.alpha_s, self.alpha_t * self.sigma_s / self.alpha_s * (-self.phi1)


def data_step(iv: Interval, x, D):
    """DPM-Solver++(1) = DDIM (eta 0) in data prediction: x_t = (sigma_t/sigma_s) x_s - alpha_t phi1 D."""
    c_x, c_D = iv.data_coefs
    return (bcast(c_x, x) * x).sub_(bcast(c_D, x) * D)    # in place on the new tensor


def noise_step(iv: Interval, x, eps):
    """DPM-Solver-1 = DDIM (eta 0) in noise prediction: x_t = (alpha_t/alpha_s) x_s - sigma_t psi1 eps.

    sigma_t psi1 is written as (alpha_t sigma_s / alpha_s)(1 - e^{-h}), which stays finite at sigma_t = 0.
    """
    c_x, c_e = iv.noise_coefs
    return (bcast(c_x, x) * x).sub_(bcast(c_e, x) * eps)


def multistep_order(i: int, steps: int, order: int, lower_order_final: bool, to_data: bool,
                    final_threshold: int = 15) -> int:
    """Order of multistep step i (0-based) of `steps`: warm-up from the history length; with
    lower_order_final and fewer than `final_threshold` steps the last steps drop order
    (diffusers' rule); a step onto sigma = 0 is always first order."""
    p = min(order, i + 1)
    if lower_order_final and steps < final_threshold:
        p = min(p, steps - i)
    if to_data:
        p = 1
    return p


def singlestep_orders(nfe: int, order: int) -> list[int]:
    """DPM-Solver-fast order plan: orders summing to nfe with as many order-`order` steps as fit
    (official `get_orders_and_timesteps_for_singlestep_solver`)."""
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        if nfe % 3 == 1:
            return [3] * (k - 1) + [1]
        return [3] * (k - 1) + [2]
    if order == 2:
        return [2] * (nfe // 2) if nfe % 2 == 0 else [2] * (nfe // 2) + [1]
    return [1] * nfe
