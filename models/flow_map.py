"""Exact flow maps: the ideal trajectory model (CTM's G) and consistency model of an embedded model.

G(x_t, t, s) is the base model's probability-flow ODE solved from t to s (float64 dopri5 in lambda, rtol = atol =
`rtol`): what a perfectly distilled two-time network would return. As a consistency model its x0-prediction is
the consistency function f(x, t) = G(x, t, t_min). One call is one NFE of that ideal network; the integrator's
own evaluations of the base are its cost, not the sampler's, and are tallied in `inner_nfe`. With guidance w the
map is that of the guided ODE, so guidance is applied here, not by the Denoiser. On an oracle base
(`gmm2d`, `digits-oracle`) nothing is learned anywhere, so a sampler's deviation from the data is its own; on
`digits` the map is exact for an imperfect denoiser, which is where CTM's gamma is meant to matter.
"""
from __future__ import annotations

import torch
from torchdiffeq import odeint

from solvers import Denoiser
from solvers.ode import pf_ode_rhs
from solvers.options import Range
from solvers.schedules import SCHEDULES

from .base import DiffusionModel, load_model, register_model

F64 = torch.float64


class ExactFlowMap(DiffusionModel):
    prediction = "x0"
    applies_guidance = True
    has_flow_map = True

    def __init__(self, base: DiffusionModel, rtol: float = 1e-6):
        self.base, self.rtol = base, float(rtol)
        self.schedule, self.shape, self.num_classes = base.schedule, base.shape, base.num_classes
        self.feature_extractor, self.weights_sha256 = base.feature_extractor, base.weights_sha256
        self.fid_reference = base.fid_reference
        self.inner_nfe = 0

    @property
    def ode_model(self) -> DiffusionModel:
        """The model whose PF-ODE this map solves: the reference trajectories (traj_rmse) are its."""
        return self.base

    @property
    def integrates(self) -> DiffusionModel:
        """Each call is a dopri5 solve of the base (its memory: the base's activations and dopri5's stages)."""
        return self.base

    @property
    def reference(self):
        return self.base.reference

    def to(self, device):
        self.device = device
        self.base = self.base.to(device)
        return self

    def flow_map(self, x, t, s, y=None, guidance: float = 1.0) -> torch.Tensor:
        """x_s from x_t: t and s are (N,) times, one value each for the whole batch (as samplers step)."""
        if bool(torch.any(t != t[0])) or bool(torch.any(s != s[0])):
            raise ValueError("an exact flow map takes one t and one s for the whole batch")
        sched, t0, s0 = self.schedule, float(t[0]), float(s[0])
        if s0 > t0:
            raise ValueError(f"a flow map jumps towards the data: s = {s0:g} > t = {t0:g}")
        if s0 == t0:
            return x.clone()
        d = Denoiser(self.base, y=y, guidance=guidance)
        to_data = float(sched.sigma(s0)) == 0.0     # sigma = 0 (lambda = inf): solve to t_min, then x0 there
        end = sched.t_min if to_data else s0
        lam = sched.lambda_(torch.tensor([t0, end], dtype=F64)).to(x.device)
        with torch.no_grad():
            out = odeint(pf_ode_rhs(d), x.to(F64), lam, method="dopri5", rtol=self.rtol, atol=self.rtol)[-1]
            if to_data:
                out = d.x0(out, end)
        self.inner_nfe += d.nfe
        return out.to(x.dtype)

    def forward(self, x, t, y=None, guidance: float = 1.0):
        """The consistency function f(x, t) = G(x, t, t_min), as an x0-prediction."""
        return self.flow_map(x, t, torch.full_like(t, self.schedule.t_min), y, guidance)


RTOL_RANGE = Range(0, 1, lo_open=True, hi_open=True)   # dopri5 tolerance of the flow map's solve


def _flow_of(base_spec: str, rtol: float, dtype: str = "float64") -> ExactFlowMap:
    """The state is integrated in float64; `dtype` is the base network's (float32 is ~3x faster on a CPU)."""
    return ExactFlowMap(load_model(base_spec, dtype={"float64": F64, "float32": torch.float32}[dtype]), rtol)


@register_model("gmm2d-flow", defaults={"schedule": "vp-discrete", "rtol": 1e-6},
                choices={"schedule": tuple(SCHEDULES)}, ranges={"rtol": RTOL_RANGE})
def gmm2d_flow(schedule="vp-discrete", rtol=1e-6):
    """Exact PF-ODE flow map of gmm2d: an ideal trajectory (CTM) / consistency model (options: schedule, rtol)."""
    return _flow_of(f"gmm2d:schedule={schedule}", rtol)


@register_model("digits-oracle-flow", defaults={"rtol": 1e-6}, ranges={"rtol": RTOL_RANGE})
def digits_oracle_flow(rtol=1e-6):
    """Exact PF-ODE flow map of digits-oracle: an ideal trajectory (CTM) / consistency model (option: rtol)."""
    return _flow_of("digits-oracle", rtol)


@register_model("digits-flow", defaults={"weights": "", "rtol": 1e-6, "dtype": "float64"},
                choices={"dtype": ("float64", "float32")}, ranges={"rtol": RTOL_RANGE})
def digits_flow(weights="", rtol=1e-6, dtype="float64"):
    """Exact PF-ODE flow map of the trained digits model, a perfect distillation (options: weights, rtol, dtype)."""
    return _flow_of(f"digits:weights={weights}" if weights else "digits", rtol, dtype)
