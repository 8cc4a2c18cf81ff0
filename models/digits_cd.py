"""digits-cd: a consistency model distilled from `digits` (consistency distillation, Song et al. 2023, Alg. 2).

Coordinates: the teacher's VE view, x~ = x_t / alpha_t at noise level sigma~ = sigma_t / alpha_t, which runs over
[sigma_min, sigma_max] = [0.0100, 157] (the teacher's t_min and T). So digits-cd is a VE consistency model like the
CM checkpoints: x_T = sigma_max z, f(x, sigma) is the x0-prediction, and cm-multistep samples it on its
N-point Karras index grid (N = 18, rho = 7: the CM paper's CIFAR-10 CD setting) exactly as on a hub checkpoint.

Network: the teacher's architecture (models/digits.py), initialised from the teacher's weights, its output read as
VP v-prediction (Salimans & Ho 2022): with a = 1 / sqrt(1 + sigma^2) (the teacher's alpha_t),
    v = net(a x~, step(sigma), y),   x0 = a^2 x~ - a sigma v,   F = (x0 - c_skip^EDM x~) / c_out^EDM,
and f = c_skip x~ + c_out F with the CM boundary scalings (models/consistency_scalings.py), so f(x, sigma_min) = x
exactly and f = x0 wherever sigma >> sigma_min. Why v and not the teacher's eps: x0 = x~ - sigma eps multiplies the
network's error by sigma (157 at sigma_max), so an eps-read CD model learns the high-noise end slowly (measured,
1,500 steps: one-step FID 383 read as eps, 20 read as v); v keeps x0 at the data's scale at every sigma and
equals the teacher's eps-read x0 as sigma -> 0, where the init from the teacher is exact to O(sigma^2).
Sampling clamps f to [-1, 1] (the CM repo's clip_denoised). A consistency model distils one guidance scale (1):
guidance is not applied to it. Training: models/training.py (`nfebench train digits-cd`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from solvers.denoiser import bcast
from solvers.schedules import VE, VPDiscrete

from .base import DiffusionModel, Reference, register_model
from .consistency_scalings import boundary_scalings
from .digits import ACTIVATION_BYTES, ARCH, DigitsEpsNet, NetModel
from .digits_data import NUM_CLASSES, SHAPE, load_digits_tensors
from .weights_store import load_weights

WEIGHTS_NAME = "digits-cd"
SIGMA_DATA = 0.5
N_STEPS, RHO = 18, 7.0


def teacher_ve_schedule(vp: VPDiscrete) -> VE:
    """The VE schedule of the teacher's sigma~ range, carrying the consistency grid (N, rho)."""
    ve = VE(sigma_min=float(torch.exp(-vp.lambda_(vp.t_min))), sigma_max=float(torch.exp(-vp.lambda_(vp.T))))
    ve.consistency_steps, ve.rho = N_STEPS, RHO
    return ve


class ConsistencyNet(nn.Module):
    """f_theta(x~, sigma, y) on top of an eps network of the teacher's VP-discrete schedule."""

    def __init__(self, vp: VPDiscrete, sigma_min: float, arch: dict | None = None):
        super().__init__()
        self.vp, self.sigma_min = vp, sigma_min
        self.eps_net = DigitsEpsNet(**(arch or ARCH))

    def teacher_inputs(self, sigma: torch.Tensor):
        """(alpha, fractional step index) of the VP time with sigma~ = sigma."""
        t = self.vp.t_of_lambda(-torch.log(sigma.to(torch.float64)))
        return self.vp.alpha(t), self.vp.model_time(t)

    def forward(self, x, sigma, y):
        _, step = self.teacher_inputs(sigma)
        s = sigma.to(x.dtype)
        a = 1 / torch.sqrt(1 + s ** 2)                       # the VP alpha_t of sigma~ = s
        v = self.eps_net(bcast(a, x) * x, step, y)
        x0 = bcast(a * a, x) * x - bcast(s * a, x) * v       # v-prediction: x0 = alpha x_t - sigma_t v (VP)
        c_skip, c_out = boundary_scalings(s, self.sigma_min, SIGMA_DATA)
        e_skip, e_out = boundary_scalings(s, 0.0, SIGMA_DATA)   # EDM's: F = (x0 - e_skip x~) / e_out
        return bcast(c_skip, x) * x + bcast(c_out / e_out, x) * (x0 - bcast(e_skip, x) * x)


class TeacherVEView(DiffusionModel):
    """A VP eps-model seen in the VE view (x~ = x / alpha, sigma~ = sigma / alpha; eps is the same in both): the
    probability-flow ODE that digits-cd distils, so that traj_rmse measures the distance from the teacher's
    exact ODE solution (distillation error and sampler together)."""

    prediction = "eps"
    activation_bytes_per_sample = ACTIVATION_BYTES

    def __init__(self, base: DiffusionModel, schedule: VE):
        self.base, self.schedule = base, schedule
        self.shape, self.num_classes = base.shape, base.num_classes

    def forward(self, x, t, y=None):
        vp = self.base.schedule
        sigma = torch.as_tensor(t, dtype=torch.float64)
        t_vp = vp.t_of_lambda(-torch.log(sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma))
        return self.base.forward(bcast(vp.alpha(t_vp).to(x.dtype), x) * x, t_vp, y)


class DigitsCD(NetModel):
    shape = SHAPE
    num_classes = NUM_CLASSES
    prediction = "x0"
    guidable = False
    feature_extractor = "digits-classifier"
    fid_reference = "digits"
    activation_bytes_per_sample = ACTIVATION_BYTES
    _ode_model: DiffusionModel | None = None   # the teacher's VE view, built on first use (ode_model)

    def __init__(self, weights: str = "", clip: bool = True):
        vp = VPDiscrete()
        self.schedule = teacher_ve_schedule(vp)
        state, meta = load_weights(WEIGHTS_NAME, weights or None)
        self.meta, self.clip, self.weights_sha256 = meta, bool(clip), meta["sha256"]
        self.net = ConsistencyNet(vp, self.schedule.t_min)
        self.net.load_state_dict(state)
        self.net.requires_grad_(False).eval()

    def forward(self, x, t, y=None):
        xn, sigma, y = self.net_inputs(x, t, y)
        with torch.no_grad():
            f = self.net(xn, sigma, y)
        f = f.clamp(-1, 1) if self.clip else f
        return f.to(device=x.device, dtype=x.dtype)

    @property
    def ode_model(self) -> DiffusionModel:
        """The teacher's PF-ODE in this model's coordinates: the reference trajectories (traj_rmse) are its."""
        if self._ode_model is None:
            from .digits import Digits
            teacher = Digits()
            teacher.dtype = self.dtype
            self._ode_model = TeacherVEView(teacher.to(self.device), self.schedule)
        return self._ode_model

    @property
    def reference(self) -> Reference:
        x, y = load_digits_tensors()
        return Reference(samples=x, labels=y)


@register_model("digits-cd", defaults={"weights": "", "clip": True})
def digits_cd(weights="", clip=True):
    """Consistency model distilled from digits (CD, VE view, N=18), for cm-multistep (options: weights=DIR, clip)."""
    return DigitsCD(weights, clip)
