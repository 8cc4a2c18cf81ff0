"""Convergence orders of the core solvers.

1. Global order on the exact gmm2d oracle (float64, schedule=vp-linear, logSNR grid): the slope of
   log(error) vs log(NFE actually used), against a tight dopri5 solve of the PF-ODE from the same x_T.

   Why the median per-sample error over NFE 80..320 and not the RMS over NFE 10..80: gmm2d's flow has
   separatrices between its 9 modes. A trajectory that starts near one is sent to the wrong mode by a
   solver error of any size until the step resolves it, so a handful of samples carry an O(1) error that
   does not shrink at the design rate. The RMS over samples is dominated by them (one sample can hold >90%
   of the squared error) and its slope depends on the seed: over NFE 10..80, dpmpp-2m 0.7..2.1 and
   ode-rk4 2.0..3.1 across seeds 0..3 (256 samples); on 4096 samples (close to the population value)
   dpmpp-2m 1.15, ode-rk4 2.13, ddim 0.75. Over NFE 10..80 even the median is pre-asymptotic (dpm-solver-3
   3.48, heun 2.27). The median over NFE 80..320 (128 samples) lies inside every band below for seeds 0..5
   (worst: ode-rk4 3.73, dpm-solver-3 3.16, heun 2.08).

   dpmpp-3m is asserted at order 2: its update is the one of the official DPM-Solver code, diffusers and
   k-diffusion (test_core_diffusers checks parity), whose D2 = (D1_0 - D1_1)/(r0 + r1) is h^2 D''/2, half the
   second difference the phi3 term needs, so the local error is O(h^3) (see the local-order test below).
   dpmpp-3m:d2_weight=exact doubles that weight and is asserted at order 3 (with the midpoint and the taylor
   second-order warm-up alike).
2. Local order of one update on a problem where D depends on lambda only and the exact step is closed form.
"""
import math

import numpy as np
import pytest
import torch

import solvers
from solvers.denoiser import Network
from solvers.dpmpp import dpmpp_multistep_update
from solvers.exponential import Interval
from solvers.schedules import VE

F64 = torch.float64
NFES = (80, 161, 320)   # all = 2 mod 3: dpm-solver-3's plan then has no first-order step
N_SAMPLES = 128

# (spec, asserted order, band)
ORDERS = [
    ("ddim:grid=logSNR", 1, 0.15),
    ("euler:grid=logSNR", 1, 0.15),
    ("heun:grid=logSNR", 2, 0.25),
    ("dpmpp-2m", 2, 0.25),
    ("dpmpp-3m", 2, 0.25),          # design order 3; the reference formula is second order (module doc)
    ("dpmpp-3m:d2_weight=exact", 3, 0.35),   # the exact Taylor weight of D2 restores order 3
    ("dpmpp-3m:d2_weight=exact,solver_type=taylor", 3, 0.35),
    ("ode-euler", 1, 0.15),
    ("ode-midpoint", 2, 0.25),
    ("ode-rk4", 4, 0.5),
    ("dpm-solver-2", 2, 0.25),
    ("dpm-solver-3", 3, 0.35),
    ("dpmpp-2s", 2, 0.25),
    # the ODE limits of the stochastic samplers (eta = 0) and the Adams methods in sigma~ (docs/solvers.md)
    ("euler-ancestral:eta=0,grid=logSNR", 1, 0.15),
    ("dpmpp-2s-ancestral:eta=0,grid=logSNR", 2, 0.25),
    ("dpmpp-sde:eta=0,grid=logSNR", 2, 0.25),
    ("dpmpp-2m-sde:eta=0,grid=logSNR", 2, 0.25),
    ("dpmpp-2m-sde:eta=0,grid=logSNR,solver_type=heun", 2, 0.25),
    ("dpmpp-3m-sde:eta=0,grid=logSNR", 2, 0.25),   # k-diffusion's D2: the reference 3M formula, second order
    ("lms:grid=logSNR", 4, 0.5),
    ("lms", 4, 0.5),
    ("ipndm:grid=logSNR", 2, 0.25),     # constant-step AB4 coefficients on a non-uniform grid: order 2
    ("ipndm", 2, 0.25),
]


@pytest.fixture(scope="module")
def problem(gmm, x_T):
    model = gmm("vp-linear")
    xT = x_T(N_SAMPLES, seed=0, scale=float(model.schedule.sigma(model.schedule.T)))
    ends = solvers.make_grid("logSNR", model.schedule, 1)   # the same endpoints as every logSNR grid below
    ref = solvers.get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(solvers.Denoiser(model), xT, ends)
    loose = solvers.get_solver("ode-dopri5:rtol=1e-10,atol=1e-10").sample_on(solvers.Denoiser(model), xT, ends)
    # the worst sample's distance to a 100x looser solve: an upper bound of the reference's own error
    ref_err = float((ref - loose).norm(dim=1).max())
    return model, xT, ref, ref_err


@pytest.mark.parametrize("spec,order,band", ORDERS, ids=[o[0] for o in ORDERS])
def test_convergence_order(problem, run_solver, spec, order, band):
    model, xT, ref, ref_err = problem
    used, med = [], []
    for nfe in NFES:
        x, n = run_solver(spec, model, xT, nfe)
        used.append(n)
        med.append(float((x - ref).norm(dim=1).median()))
    assert min(med) > 20 * ref_err, f"reference not accurate enough for {spec}: {med} vs {ref_err}"
    slope = -np.polyfit(np.log(used), np.log(med), 1)[0]
    assert abs(slope - order) <= band, f"{spec}: slope {slope:.3f} (errors {med}, NFE {used})"


# --- local order of one update -------------------------------------------------------------------------
# VE (alpha = 1, sigma = e^-lambda) with a data prediction that depends on lambda only:
# x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lam_s}^{lam_t} e^lam D(lam) dlam, closed form for D = sum c e^{b lam}.
TERMS = [(0.5, 0.8), (0.3, -1.7), (-0.2, 0.25)]
LAM_S, X_S = 0.3, 0.7


def D(lam):
    return sum(c * math.exp(b * lam) for c, b in TERMS)


def exact_step(lam_s, lam_t, x_s):
    integral = sum(c * (math.exp((1 + b) * lam_t) - math.exp((1 + b) * lam_s)) / (1 + b) for c, b in TERMS)
    return math.exp(lam_s - lam_t) * x_s + math.exp(-lam_t) * integral


class LambdaOnly(Network):
    """x0-prediction model on VE whose output is D(lambda(t)) whatever x."""
    schedule = VE()
    prediction = "x0"
    num_classes = None

    def forward(self, x, t, y=None):
        lam = -torch.log(t)
        return torch.tensor([D(float(v)) for v in lam], dtype=x.dtype).reshape(-1, 1).expand_as(x)


def local_order(step):
    """Slope of log|one-step error| vs log h; a method of global order p has local order p + 1."""
    hs = [0.05, 0.025, 0.0125, 0.00625]
    errs = [abs(step(h) - exact_step(LAM_S, LAM_S + h, X_S)) for h in hs]
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def solver_step(spec):
    def step(h):
        ve = LambdaOnly.schedule
        grid = ve.t_of_lambda(torch.tensor([LAM_S, LAM_S + h], dtype=F64))
        x = solvers.get_solver(spec).sample_on(solvers.Denoiser(LambdaOnly()), torch.full((1, 1), X_S, dtype=F64), grid)
        return float(x)
    return step


def multistep_step(order, solver_type="dpmsolver", d2_weight="reference"):
    """One multistep update from exact history on a uniform lambda grid."""
    def step(h):
        ve = LambdaOnly.schedule
        lams = [torch.tensor(LAM_S - k * h, dtype=F64) for k in range(order - 1, -1, -1)]
        Ds = [torch.full((1, 1), D(float(lam)), dtype=F64) for lam in lams]
        iv = Interval(ve, ve.t_of_lambda(LAM_S), ve.t_of_lambda(LAM_S + h))
        x = torch.full((1, 1), X_S, dtype=F64)
        return float(dpmpp_multistep_update(iv, x, Ds, lams, order, solver_type, d2_weight))
    return step


@pytest.mark.parametrize("spec,local", [
    ("ddim", 2), ("dpm-solver-1", 2), ("euler", 2), ("dpm-solver-2", 3), ("dpmpp-2s", 3), ("dpm-solver-3", 4),
    ("heun", 3),
])
def test_local_order_singlestep(spec, local):
    assert abs(local_order(solver_step(spec)) - local) < 0.15


@pytest.mark.parametrize("order,solver_type,d2_weight,local", [
    (1, "dpmsolver", "reference", 2), (2, "dpmsolver", "reference", 3), (2, "taylor", "reference", 3),
    (3, "dpmsolver", "reference", 3),   # the reference 3M update: local O(h^3), i.e. a second-order method
    (3, "dpmsolver", "exact", 4),       # exact D2 weight: local O(h^4), third order
])
def test_local_order_multistep(order, solver_type, d2_weight, local):
    assert abs(local_order(multistep_step(order, solver_type, d2_weight)) - local) < 0.15


