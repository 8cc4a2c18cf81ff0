"""The counting Denoiser: the only way a solver reaches the network.

It converts any prediction type to x0(x, t) and eps(x, t), applies classifier-free guidance (one guided
evaluation counts as ONE NFE, as in the DPM-Solver and DC-Solver papers; the conditional and unconditional
passes are batched) and counts every evaluation. Prediction types (one meaning each, docs/solvers.md#predictions):
'eps' the noise, 'x0' the data, 'v' Salimans-Ho's alpha eps - sigma x0, 'flow' a rectified flow's velocity
eps - x0 = dx/dt (diffusers' flow_prediction; rectified-flow schedule only). Spending past `budget` raises
NFEBudgetExceeded before the network is called. A trajectory model (CTM's two-time network) also offers
`flow_map(x, t, s)`, one NFE too.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .noise import NoiseStream
from .schedules import as_t


class NFEBudgetExceeded(RuntimeError):
    pass


class Prediction:
    """One evaluation as a noise prediction eps and a data prediction x0 = (x - sigma eps) / alpha. x0 is computed
    when first read, so a solver that follows eps (PNDM) does not pay for it: read it before changing in place the
    x that was evaluated. Where the prediction gives x0 without dividing by alpha (on a rectified flow, whose
    alpha is 0 at t = 1), it comes as `x0`."""

    def __init__(self, eps: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                 x0: torch.Tensor | None = None):
        self.eps, self._x, self._alpha, self._sigma, self._x0 = eps, x, alpha, sigma, x0

    @property
    def x0(self) -> torch.Tensor:
        if self._x0 is None:
            self._x0 = rsub_(self._x, self._sigma * self.eps).div_(self._alpha)
            self._x = None
        return self._x0

    @property
    def velocity(self) -> torch.Tensor:
        """eps - x0: on a rectified flow the ODE's dx/dt (what diffusers' flow schedulers step with)."""
        return self.eps - self.x0


def rsub_(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x - t written over t, a new tensor of the caller's (one 12 MB buffer less at batch 1000 than x - t: fewer
    pages for the allocator to fault in); a new tensor where autograd records the graph (out= has no gradient)."""
    if torch.is_grad_enabled() and (x.requires_grad or t.requires_grad):
        return x - t
    return torch.sub(x, t, out=t)


class TimeScales(NamedTuple):
    """A time as the Denoiser uses it for one dtype and device: t (0-d, one time for the batch, or per-sample (N,))
    on that device, alpha_t and sigma_t in that dtype there, shaped to multiply x (bcast). `Denoiser.scales` makes
    one; a solver's per-plan table (solvers/grid_schedule.py) makes them for its grid once, and passes one to
    `predict` in place of a time."""
    t: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor


def bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (N,) or scalar coefficient shaped to multiply x (N, ...), in x's dtype."""
    c = torch.as_tensor(c).to(dtype=x.dtype, device=x.device)
    if c.dim() == 0:
        return c
    return c.reshape(-1, *([1] * (x.dim() - 1)))


def gaussian_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like x. The runner passes a seed-addressed NoiseStream (a sample's noise is
    the same in any batch and on any device); a torch.Generator draws where it lives and moves to x's device."""
    if isinstance(generator, NoiseStream):
        return generator.randn_like(x)
    dev = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


PREDICTIONS = ("eps", "x0", "v", "flow")


class Network:
    """What the Denoiser reads of a model, declared with defaults (models.base.DiffusionModel subclasses it).

    schedule: the NoiseSchedule it was trained with; prediction: what `forward` returns (one of PREDICTIONS);
    num_classes: None when unconditional (label `num_classes` is the null label of classifier-free guidance);
    guidable: False where guidance does not apply although labels do (a consistency model distils one scale);
    applies_guidance: `forward(x, t, y, guidance=g)` applies guidance itself (an exact flow map);
    has_flow_map: it offers `flow_map(x, t, s, y, guidance)`, a trajectory model's two-time network (CTM).
    """

    name = "?"
    schedule = None
    prediction = "eps"
    num_classes: int | None = None
    guidable = True
    applies_guidance = False
    has_flow_map = False

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **kw) -> torch.Tensor:
        raise NotImplementedError

    def flow_map(self, x, t, s, y=None, guidance: float = 1.0) -> torch.Tensor:
        raise NotImplementedError(f"model '{self.name}' has no flow map G(x, t, s)")


def _per_sample(t, x: torch.Tensor) -> torch.Tensor:
    """A time (scalar or (N,)) as a float64 (N,) tensor on x's device."""
    t = as_t(t).to(x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class Denoiser:
    def __init__(self, model, y=None, guidance: float = 1.0, budget: int | None = None):
        self.model = model
        self.schedule = model.schedule
        self.guidance = float(guidance)
        self.budget = budget
        self.nfe = 0
        if y is not None:
            y = torch.as_tensor(y, dtype=torch.long)
        self.y = y
        if not isinstance(model, Network):
            raise TypeError(f"the Denoiser needs a solvers.Network (models.DiffusionModel is one), got {type(model).__name__}")
        if self.guidance != 1.0 and (model.num_classes is None or y is None):
            raise ValueError("classifier-free guidance != 1 needs a class-conditional model and labels y")
        if self.guidance != 1.0 and not model.guidable:
            raise ValueError(f"model '{model.name}' distils one guidance scale (a consistency "
                             "model): guidance != 1 does not apply to it")
        if model.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {model.prediction!r}; accepted: {', '.join(PREDICTIONS)}")
        rf = self.schedule.kind == "rf"
        if model.prediction == "flow" and not rf:
            raise ValueError(f"model '{model.name}' predicts a flow velocity (eps - x0), which needs a "
                             f"rectified-flow schedule; its schedule is {self.schedule.name}")
        # x0 without dividing by alpha (0 at a rectified flow's t = 1); VP/VE keep the round trip through eps
        self._direct = model.prediction == "flow" or (rf and model.prediction in ("x0", "v"))

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.nfe

    def _count(self):
        if self.budget is not None and self.nfe + 1 > self.budget:
            raise NFEBudgetExceeded(f"NFE budget of {self.budget} exhausted")
        self.nfe += 1

    def _eps_of(self, out, x, a, s):
        kind = self.model.prediction
        if kind == "eps":
            return out
        if kind == "x0":   # in place on the new tensors
            return (x - a * out).div_(s)
        if kind == "v":  # v = alpha eps - sigma x0, x = alpha x0 + sigma eps  =>  eps = (alpha v + sigma x) / (alpha^2 + sigma^2)
            return (a * out).add_(s * x).div_(a * a + s * s)  # VP: alpha^2 + sigma^2 = 1; VE/EDM: it is not
        raise ValueError(f"prediction type {kind!r} has no eps of this form")

    def _eps_x0(self, out, x, a, s) -> tuple:
        """(eps, x0), both straight from the output, without dividing by alpha (self._direct)."""
        kind = self.model.prediction
        if kind == "flow":   # v = eps - x0 on x = (1 - t) x0 + t eps: eps = x + (1 - t) v, x0 = x - t v
            return (a * out).add_(x), rsub_(x, s * out)
        if kind == "x0":
            return self._eps_of(out, x, a, s), out
        # v = alpha eps - sigma x0  =>  x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)
        return self._eps_of(out, x, a, s), (a * x).sub_(s * out).div_(a * a + s * s)

    def _labels(self, n: int, device):
        y = self.y
        if y is not None:
            y = y.to(device)
            if y.dim() == 0:  # one label for the whole batch
                y = y.expand(n)
        return y

    def scales(self, x: torch.Tensor, t) -> TimeScales:
        """Time t (scalar or per-sample (N,)) for x: the per-sample time and alpha_t, sigma_t on x's device."""
        t_vec = _per_sample(t, x)
        alpha, sigma, _ = self.schedule.alpha_sigma_lambda(t_vec)
        return TimeScales(t_vec, bcast(alpha, x), bcast(sigma, x))

    def predict(self, x: torch.Tensor, t) -> Prediction:
        """One network evaluation (1 NFE) at time t (scalar or per-sample (N,) tensor, or its TimeScales for x)."""
        self._count()
        n = x.shape[0]
        t_vec, a, s = t if isinstance(t, TimeScales) else self.scales(x, t)
        if t_vec.dim() == 0:
            t_vec = t_vec.expand(n)
        y = self._labels(n, x.device)
        if self._direct:
            eps, x0 = self._eps_x0(self._output(x, t_vec, y), x, a, s)
            return Prediction(eps, x, a, s, x0)
        if self.model.applies_guidance:   # guidance is inside the model (an exact flow map)
            eps = self._eps_of(self.model.forward(x, t_vec, y, guidance=self.guidance), x, a, s)
        elif self.guidance == 1.0:
            eps = self._eps_of(self.model.forward(x, t_vec, y), x, a, s)
        else:
            null = torch.full_like(y, self.model.num_classes)
            out = self.model.forward(torch.cat([x, x]), torch.cat([t_vec, t_vec]), torch.cat([y, null]))
            a2, s2 = torch.cat([a, a]) if a.dim() else a, torch.cat([s, s]) if s.dim() else s
            e = self._eps_of(out, torch.cat([x, x]), a2, s2)
            e_c, e_u = e[:n], e[n:]
            eps = e_u + (e_c - e_u).mul_(self.guidance)
        return Prediction(eps, x, a, s)

    def _output(self, x, t_vec, y) -> torch.Tensor:
        """The model output, guided: eps and x0 are affine in it with the same coefficients for both passes, so
        guiding it is guiding them (the SD3 pipeline guides its velocity alike)."""
        if self.model.applies_guidance:
            return self.model.forward(x, t_vec, y, guidance=self.guidance)
        if self.guidance == 1.0:
            return self.model.forward(x, t_vec, y)
        n, null = x.shape[0], torch.full_like(y, self.model.num_classes)
        out = self.model.forward(torch.cat([x, x]), torch.cat([t_vec, t_vec]), torch.cat([y, null]))
        o_c, o_u = out[:n], out[n:]
        return o_u + (o_c - o_u).mul_(self.guidance)

    @property
    def has_flow_map(self) -> bool:
        return self.model.has_flow_map

    def flow_map(self, x: torch.Tensor, t, s) -> torch.Tensor:
        """x_s = G(x_t, t, s), one evaluation (1 NFE) of a trajectory model's two-time network (CTM). Guidance is
        the model's to apply: a jump is not a linear combination of a conditional and an unconditional one."""
        if not self.has_flow_map:
            raise ValueError(f"model '{self.model.name}' has no flow map G(x, t, s)")
        self._count()
        y = self._labels(x.shape[0], x.device)
        return self.model.flow_map(x, _per_sample(t, x), _per_sample(s, x), y, self.guidance)

    def x0(self, x, t) -> torch.Tensor:
        return self.predict(x, t).x0

    def eps(self, x, t) -> torch.Tensor:
        return self.predict(x, t).eps
