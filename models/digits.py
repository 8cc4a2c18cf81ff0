"""digits: a class-conditional eps-prediction diffusion model of scikit-learn's 8x8 handwritten digits.

Trained on google/ddpm-cifar10-32's objective: DDPM discrete linear betas 1e-4..0.02 over 1000 steps, MSE on
eps averaged uniformly over the integer timesteps (see models/training.py), so DDIM, PNDM and time-shift behave as in their papers. The
network sees the fractional training-step index `schedule.model_time(t)`, class label 10 is the null label
(classifier-free guidance; y=None means unconditional), and the weights are an EMA. They ship as
models/weights/digits.safetensors, sha256-checked on load (`nfebench train digits` recreates them).

Architecture: a residual MLP on the 64 pixels (width 256, 4 pre-LayerNorm blocks with hidden width 512), each
block's hidden layer scaled and shifted (FiLM) by SiLU(MLP(sinusoidal embedding of the step index) + class
embedding); 2.24 M parameters, 9.0 MB in float32. Training (models/training.py): 20,000 steps of batch 256,
importance-sampled timesteps (same objective as DDPM's), AdamW lr 2e-3 with warmup and cosine decay, EMA 0.9995,
about 17 minutes on 2 CPU cores.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from solvers.schedules import VPDiscrete

from .base import DiffusionModel, Reference, register_model
from .digits_data import NUM_CLASSES, SHAPE, load_digits_tensors
from .weights_store import load_weights

WEIGHTS_NAME = "digits"
ARCH = {"width": 256, "blocks": 4, "mult": 2, "temb": 128}
ACTIVATION_BYTES = 32_768   # one call's activations per sample (ARCH's MLP; measured peak RSS, ~1.5-2x above)


def timestep_embedding(steps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DDPM/ADM sinusoidal embedding of (fractional) step indices, computed in float64: (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=steps.device) / half)
    args = steps.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """Pre-LayerNorm residual MLP block; the embedding scales and shifts its hidden layer (FiLM, as ADM's
    scale-shift norm): a noise-level-dependent gain fits eps far better than an additive shift alone."""

    def __init__(self, width: int, emb: int, mult: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mult * width)
        self.emb = nn.Linear(emb, 2 * mult * width)
        self.fc2 = nn.Linear(mult * width, width)

    def forward(self, h, e):
        scale, shift = self.emb(e).chunk(2, dim=1)
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) * (1 + scale) + shift))


class DigitsEpsNet(nn.Module):
    """eps_theta(x_t, step, y): x (N, 1, 8, 8), step (N,) fractional index in [0, 999], y (N,) in 0..10."""

    def __init__(self, width: int = 256, blocks: int = 4, mult: int = 2, temb: int = 128,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.temb_dim = temb
        self.time = nn.Sequential(nn.Linear(temb, width), nn.SiLU(), nn.Linear(width, width))
        self.label = nn.Embedding(num_classes + 1, width)   # index num_classes = null label
        self.inp = nn.Linear(64, width)
        self.blocks = nn.ModuleList(ResBlock(width, width, mult) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 64)

    def forward(self, x, step, y):
        dt = self.inp.weight.dtype
        e = self.time(timestep_embedding(step, self.temb_dim).to(dt)) + self.label(y)
        e = F.silu(e)
        h = self.inp(x.reshape(x.shape[0], -1).to(dt))
        for blk in self.blocks:
            h = blk(h, e)
        return self.out(F.silu(self.norm(h))).reshape(x.shape[0], *SHAPE)


class NetModel(DiffusionModel):
    """A model around one torch network `self.net` (class-conditional digits): device and dtype follow the model's."""

    def to(self, device):
        self.device = device
        self.net.to(device=device, dtype=self.dtype)
        return self

    def net_inputs(self, x, t, y):
        """(x, t, y) on the network's device: x in the model's dtype, t a float64 (N,), y labels (None: null)."""
        if next(self.net.parameters()).dtype != self.dtype:   # dtype set after .to(): follow it
            self.net.to(dtype=self.dtype)
        dev = next(self.net.parameters()).device
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64)
        t = (t.expand(n) if t.dim() == 0 else t).to(dev)
        y = torch.full((n,), NUM_CLASSES, dtype=torch.long, device=dev) if y is None else \
            torch.as_tensor(y, dtype=torch.long).to(dev)
        return x.to(device=dev, dtype=self.dtype), t, y


class Digits(NetModel):
    shape = SHAPE
    num_classes = NUM_CLASSES
    prediction = "eps"
    feature_extractor = "digits-classifier"
    fid_reference = "digits"
    activation_bytes_per_sample = ACTIVATION_BYTES
    weights_name = WEIGHTS_NAME       # what a model of this network loads, and the schedule it was trained on
    schedule_type = VPDiscrete        # (digits-fm: the same network trained as a rectified flow)

    def __init__(self, weights: str = ""):
        self.schedule = self.schedule_type()
        state, meta = load_weights(self.weights_name, weights or None)
        self.meta, self.weights_sha256 = meta, meta["sha256"]
        self.net = DigitsEpsNet(**ARCH)
        self.net.load_state_dict(state)
        self.net.requires_grad_(False).eval()

    def forward(self, x, t, y=None):
        xn, t, y = self.net_inputs(x, t, y)
        with torch.no_grad():
            out = self.net(xn, self.schedule.model_time(t), y)
        return out.to(device=x.device, dtype=x.dtype)

    @property
    def reference(self) -> Reference:
        x, y = load_digits_tensors()
        return Reference(samples=x, labels=y)


@register_model("digits", defaults={"weights": ""})
def digits(weights=""):
    """Class-conditional eps-prediction MLP of sklearn's 8x8 digits, DDPM linear betas (options: weights=DIR)."""
    return Digits(weights)
