"""The consistency models' boundary-condition scalings (Song et al. 2023, app. C), shared by every consistency model.

f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x, sigma) with
    c_skip = s_d^2 / ((sigma - sigma_min)^2 + s_d^2),   c_out = (sigma - sigma_min) s_d / sqrt(sigma^2 + s_d^2),
so f(x, sigma_min) = x exactly; away from sigma_min they are EDM's preconditioning (EDM eq. 7 with s_d).
"""
from __future__ import annotations

import torch


def boundary_scalings(sigma: torch.Tensor, sigma_min: float, sigma_data: float = 0.5):
    """(c_skip, c_out) at noise levels sigma (a tensor of any shape)."""
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / torch.sqrt(sigma ** 2 + sigma_data ** 2)
    return c_skip, c_out
