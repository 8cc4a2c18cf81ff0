"""Shared math of the exponential-integrator family (DDIM, DPM-Solver, DPM-Solver++, UniPC, ...).

Step s -> t with h = lambda_t - lambda_s > 0. Data-prediction phi-functions (as the reference code writes
them): phi1 = e^{-h} - 1 (negative), phi2 = phi1/h + 1, phi3 = phi2/h - 1/2. Noise-prediction:
psi1 = e^{h} - 1, psi2 = psi1/h - 1, psi3 = psi2/h - 1/2. A target with sigma_t = 0 (t = 0) has h = inf;
the first-order steps below stay finite there, higher orders must not be used for such a step.
"""
from __future__ import annotations

import torch

from .denoiser import bcast
from .schedules import as_t


class Interval:
    """Schedule quantities of one step s -> t (float64; scalars or per-sample (N,) tensors)."""

    def __init__(self, schedule, s, t):
        self.s, self.t = as_t(s), as_t(t)
        self.alpha_s, self.sigma_s = schedule.alpha(self.s), schedule.sigma(self.s)
        self.alpha_t, self.sigma_t = schedule.alpha(self.t), schedule.sigma(self.t)
        self.lam_s, self.lam_t = schedule.lambda_(self.s), schedule.lambda_(self.t)
        self.h = self.lam_t - self.lam_s
        self.to_data = bool(torch.all(self.sigma_t == 0))

    # phi functions of h (data prediction) and psi functions (noise prediction)
    @property
    def phi1(self):
        return torch.expm1(-self.h)

    @property
    def phi2(self):
        return self.phi1 / self.h + 1.0

    @property
    def phi3(self):
        return self.phi2 / self.h - 0.5

    @property
    def psi1(self):
        return torch.expm1(self.h)

    @property
    def psi2(self):
        return self.psi1 / self.h - 1.0

    @property
    def psi3(self):
        return self.psi2 / self.h - 0.5


def data_step(iv: Interval, x, D):
    """DPM-Solver++(1) = DDIM (eta 0) in data prediction: x_t = (sigma_t/sigma_s) x_s - alpha_t phi1 D."""
    return bcast(iv.sigma_t / iv.sigma_s, x) * x - bcast(iv.alpha_t * iv.phi1, x) * D


def noise_step(iv: Interval, x, eps):
    """DPM-Solver-1 = DDIM (eta 0) in noise prediction: x_t = (alpha_t/alpha_s) x_s - sigma_t psi1 eps.

    sigma_t psi1 is written as (alpha_t sigma_s / alpha_s)(1 - e^{-h}), which stays finite at sigma_t = 0.
    """
    c = iv.alpha_t * iv.sigma_s / iv.alpha_s * (-iv.phi1)
    return bcast(iv.alpha_t / iv.alpha_s, x) * x - bcast(c, x) * eps


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
