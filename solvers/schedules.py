"""Noise schedules: x_t = alpha_t * x_0 + sigma_t * eps on continuous time t in [t_min, T].

Every schedule is defined by log(alpha_t) (VP: sigma_t^2 = 1 - alpha_t^2), by sigma_t (VE/EDM: alpha = 1,
sigma = t), or by both (rectified flow: alpha = 1 - t, sigma = t). lambda_t = log(alpha_t) - log(sigma_t) is
the half log-SNR; it decreases in t and is inverted by
`t_of_lambda`. t = 0 is the data point (alpha = 1, sigma = 0, lambda = +inf) on every schedule, so a grid may
end there (the final "jump to x0" of diffusers' schedulers).

All functions take floats or tensors of any shape and return float64 tensors of the same shape.
`lambda` is a Python keyword, so the method is `lambda_`.
"""
from __future__ import annotations

import math

import torch

F64 = torch.float64


def as_t(t) -> torch.Tensor:
    """A float64 tensor view of a time (scalar or tensor)."""
    if isinstance(t, torch.Tensor):
        return t.to(F64)
    return torch.tensor(t, dtype=F64)


class NoiseSchedule:
    kind = "vp"  # "vp" (alpha^2 + sigma^2 = 1), "ve" (alpha = 1) or "rf" (rectified flow: alpha + sigma = 1)
    name = "?"
    t_min: float
    T: float
    num_train_steps: int | None = None  # discrete (training-step indexed) schedules only
    consistency_steps: int | None = None  # a consistency checkpoint's Karras index grid: its number of points
    rho: float | None = None              # and that grid's exponent

    def log_alpha(self, t) -> torch.Tensor:
        raise NotImplementedError

    def alpha(self, t) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t) -> torch.Tensor:
        return torch.sqrt(_sigma2_of_log_alpha(self.log_alpha(t)))

    def lambda_(self, t) -> torch.Tensor:
        return _lambda_of_log_alpha(self.log_alpha(t))

    def alpha_sigma_lambda(self, t) -> tuple:
        """alpha, sigma and lambda at t together (a plan's table, solvers/grid_schedule.py): from one log(alpha)
        where the class keeps this base's three formulas (VP), else from its own methods (VE)."""
        cls = type(self)
        if (cls.alpha, cls.sigma, cls.lambda_) != (NoiseSchedule.alpha, NoiseSchedule.sigma, NoiseSchedule.lambda_):
            return self.alpha(t), self.sigma(t), self.lambda_(t)
        la = self.log_alpha(t)
        sigma2 = _sigma2_of_log_alpha(la)
        return torch.exp(la), torch.sqrt(sigma2), _lambda_of_log_alpha(la, sigma2)

    def t_of_lambda(self, lam) -> torch.Tensor:
        # VP: log alpha = -1/2 log(1 + e^{-2 lambda}); each schedule inverts log alpha
        lam = as_t(lam)
        return self.t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2.0 * lam))

    def t_of_log_alpha(self, log_alpha) -> torch.Tensor:
        raise NotImplementedError

    def dlog_alpha_dlambda(self, lam) -> torch.Tensor:
        """d log(alpha)/d lambda; VP: sigma^2 = sigmoid(-2 lambda)."""
        return torch.sigmoid(-2.0 * as_t(lam))

    def model_time(self, t) -> torch.Tensor:
        """The time value the network was trained with at continuous time t."""
        return as_t(t)

    def __repr__(self):
        return f"{type(self).__name__}(t_min={self.t_min:g}, T={self.T:g})"


class VPDiscrete(NoiseSchedule):
    """DDPM discrete schedule (default: 1000 steps, betas linear 1e-4..0.02, as google/ddpm-cifar10-32).

    Continuous time as the official DPM-Solver code: step n sits at t = (n + 1) / N and log(alpha) is
    interpolated linearly in t; the network receives the fractional index N * (t - 1/N). One deliberate
    deviation: below t = 1/N we interpolate to the knot (t = 0, alpha = 1) instead of extrapolating, so that
    t = 0 is exactly the data point (diffusers' set_alpha_to_one / final sigma 0).
    """

    name = "vp-discrete"

    def __init__(self, betas=None, alphas_cumprod=None, num_train_steps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        if alphas_cumprod is None:
            if betas is None:
                betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=F64)
            betas = torch.as_tensor(betas, dtype=F64)
            log_abar = torch.cumsum(torch.log1p(-betas), 0)
        else:
            log_abar = torch.log(torch.as_tensor(alphas_cumprod, dtype=F64))
        n = log_abar.numel()
        self.num_train_steps = n
        self.alphas_cumprod = torch.exp(log_abar)
        self._t_knots = torch.arange(0, n + 1, dtype=F64) / n  # t = 0 plus (k+1)/N
        self._la_knots = torch.cat([torch.zeros(1, dtype=F64), 0.5 * log_abar])
        self.t_min, self.T = 1.0 / n, 1.0

    def log_alpha(self, t):
        t = as_t(t)
        return _interp(t, self._t_knots, self._la_knots)

    def t_of_log_alpha(self, log_alpha):
        # log alpha decreases in t: interpolate on the flipped knots
        return _interp(-as_t(log_alpha), (-self._la_knots).contiguous(), self._t_knots)

    def model_time(self, t):
        return (as_t(t) - 1.0 / self.num_train_steps) * self.num_train_steps

    def t_of_step(self, n) -> torch.Tensor:
        """Continuous time of integer training step n (n = -1 is the data point t = 0)."""
        return (as_t(n) + 1.0) / self.num_train_steps


def _interp(x, xp, fp):
    """Piecewise-linear interpolation with linear extrapolation at both ends (xp increasing)."""
    shape = x.shape
    x = x.reshape(-1).contiguous()
    xp, fp = xp.to(x.device), fp.to(x.device)  # the knots live on the CPU; per-sample times may not
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    out = f0 + (x - x0) * (f1 - f0) / (x1 - x0)
    return out.reshape(shape)


class VPLinear(NoiseSchedule):
    """ScoreSDE continuous VP with linear beta(t) = beta_min + t (beta_max - beta_min), T = 1."""

    name = "vp-linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, T: float = 1.0):
        self.b0, self.b1, self.t_min, self.T = beta_min, beta_max, t_min, T

    def log_alpha(self, t):
        t = as_t(t)
        return -(self.b1 - self.b0) * t ** 2 / 4.0 - self.b0 * t / 2.0

    def t_of_lambda(self, lam):
        # closed form (official inverse_lambda): L = log(1 + e^{-2 lambda})
        L = torch.nn.functional.softplus(-2.0 * as_t(lam))
        return 2.0 * L / (self.b0 + torch.sqrt(self.b0 ** 2 + 2.0 * (self.b1 - self.b0) * L))

    def t_of_log_alpha(self, log_alpha):
        return self.t_of_lambda(_lambda_of_log_alpha(as_t(log_alpha)))


def _sigma2_of_log_alpha(la):
    """VP: sigma^2 = 1 - alpha^2, written with expm1 so it stays accurate where alpha -> 1."""
    return -torch.expm1(2.0 * la)


def _lambda_of_log_alpha(la, sigma2=None):
    """VP: lambda = log(alpha) - log(sigma) (sigma^2 given when computed already)."""
    return la - 0.5 * torch.log(_sigma2_of_log_alpha(la) if sigma2 is None else sigma2)


class VPCosine(NoiseSchedule):
    """Improved-DDPM cosine schedule in continuous time (s = 0.008, T = 0.9946 as the official code)."""

    name = "vp-cosine"

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, T: float = 0.9946):
        self.s, self.t_min, self.T = s, t_min, T
        self._la0 = math.log1p(-2 * math.sin(math.pi * s / (4 * (1 + s))) ** 2)

    def log_alpha(self, t):
        t = as_t(t)
        # log cos(a) = log1p(-2 sin^2(a/2)): keeps full relative precision at small t, where log(cos(a)) is ~1e-4
        a = math.pi / 2 * (t + self.s) / (1 + self.s)
        # clamp: rounding must not put alpha above 1 at t = 0
        return (torch.log1p(-2 * torch.sin(a / 2) ** 2) - self._la0).clamp(max=0.0)

    def t_of_log_alpha(self, log_alpha):
        la = as_t(log_alpha)
        # arccos(c) = 2 asin(sqrt((1 - c) / 2)) with 1 - c = -expm1(.): arccos loses digits where c -> 1 (small t)
        half_gap = -torch.expm1(la + self._la0) / 2
        return 2 * (1 + self.s) / math.pi * 2 * torch.asin(torch.sqrt(half_gap)) - self.s


class VE(NoiseSchedule):
    """VE / EDM: alpha = 1, sigma = t, t = sigma in [0.002, 80]."""

    kind = "ve"
    name = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.t_min, self.T = sigma_min, sigma_max

    def log_alpha(self, t):
        return torch.zeros_like(as_t(t))

    def sigma(self, t):
        return as_t(t).clone()

    def lambda_(self, t):
        return -torch.log(as_t(t))

    def t_of_lambda(self, lam):
        return torch.exp(-as_t(lam))

    def dlog_alpha_dlambda(self, lam):
        return torch.zeros_like(as_t(lam))


class RectifiedFlow(NoiseSchedule):
    """Rectified flow (SD3, diffusers' FlowMatch schedulers): x_t = (1 - t) x0 + t eps, t in [t_min, T].

    Neither VP nor VE: alpha = 1 - t, sigma = t, lambda = log((1 - t)/t), t(lambda) = sigmoid(-lambda) and
    dlog(alpha)/dlambda = t, each in closed form. t = 1 is pure noise (alpha = 0, lambda = -inf): only the flow
    samplers and DDIM step from there (the `flow_euler` grid), so T = 1 - 1e-3 keeps lambda finite for the others,
    symmetric with t_min = 1e-3 (diffusers' smallest flow sigma). A flow network takes diffusers' float timestep
    `num_train_timesteps * t`.
    """

    kind = "rf"
    name = "rectified-flow"

    def __init__(self, t_min: float = 1e-3, T: float = 1 - 1e-3, num_train_timesteps: int = 1000):
        self.t_min, self.T, self.num_train_timesteps = t_min, T, num_train_timesteps

    def log_alpha(self, t):
        return torch.log1p(-as_t(t))

    def alpha(self, t):
        return 1.0 - as_t(t)

    def sigma(self, t):
        return as_t(t).clone()

    def lambda_(self, t):
        t = as_t(t)
        return torch.log1p(-t) - torch.log(t)

    def t_of_lambda(self, lam):
        return torch.sigmoid(-as_t(lam))

    def t_of_log_alpha(self, log_alpha):
        return -torch.expm1(as_t(log_alpha))

    def dlog_alpha_dlambda(self, lam):
        return torch.sigmoid(-as_t(lam))   # = t: dlog(alpha)/dt = -1/(1 - t), dt/dlambda = -t (1 - t)

    def model_time(self, t):
        return as_t(t) * self.num_train_timesteps


SCHEDULES = {
    "vp-discrete": VPDiscrete,
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "ve": VE,
    "rectified-flow": RectifiedFlow,
}
