"""Noise schedules and time grids against published reference values (DDPM, DPM-Solver, EDM conventions)."""
import math

import numpy as np
import pytest
import torch

from solvers import GRIDS, SCHEDULES, VE, VPCosine, VPDiscrete, VPLinear, make_grid
from solvers.grids import ends_at_data

F64 = torch.float64
CONTINUOUS_GRIDS = ["time_uniform", "logSNR", "time_quadratic", "karras"]
DIFFUSERS_GRIDS = ["leading", "trailing", "linspace"]
FLOW_GRIDS = ["flow_euler", "flow_linspace", "flow_unipc"]   # rectified flow only (tests/test_flow.py)


def close(a, b, tol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and np.all(np.abs(a - b) <= tol), (a, b)


def test_ddpm_discrete_values():
    s = VPDiscrete()
    close(s.alphas_cumprod[0], 0.9999, 1e-15)
    close(s.alphas_cumprod[999], 4.0358e-5, 0.00005e-5)
    close(s.lambda_(1e-3), 4.6051, 0.00005)           # step 0 sits at t = 1/1000
    close(s.lambda_(1.0), -5.0588, 0.00005)
    close(torch.exp(-s.lambda_(torch.tensor([1e-3, 1.0], dtype=F64))), [0.0100005, 157.407], 0.0005)
    close(s.model_time(torch.tensor([1e-3, 0.5, 1.0], dtype=F64)), [0, 499, 999], 1e-9)
    assert s.t_min == 1e-3 and s.T == 1.0
    # from betas (log-cumsum) or from a given alphas_cumprod: the same schedule
    other = VPDiscrete(alphas_cumprod=s.alphas_cumprod)
    t = torch.linspace(0, 1, 1001, dtype=F64)
    close(other.lambda_(t[1:]), s.lambda_(t[1:]), 1e-12)


def test_vp_linear_and_cosine_values():
    s = VPLinear()
    close(s.lambda_(torch.tensor([1.0, 1e-3, 1e-4], dtype=F64)), [-5.0250, 4.5577, 5.7515], 0.00005)
    close(torch.exp(-s.lambda_(1.0)), 152.17, 0.005)
    # EDM's sigma~(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) is the same schedule
    t = torch.tensor([0.01, 0.3, 1.0], dtype=F64)
    close(torch.exp(-s.lambda_(t)), torch.sqrt(torch.exp(19.9 * t ** 2 / 2 + 0.1 * t) - 1), 1e-12)
    c = VPCosine()
    assert c.T == 0.9946
    u = torch.tensor([0.0, 0.3, 0.9946], dtype=F64)
    ref = torch.log(torch.cos(math.pi / 2 * (u + 0.008) / 1.008)) - math.log(math.cos(math.pi / 2 * 0.008 / 1.008))
    close(c.log_alpha(u), ref, 1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_invariants(name):
    s = SCHEDULES[name]()
    t = torch.cat([torch.linspace(s.t_min, s.T, 2001, dtype=F64), torch.logspace(-6, 0, 200, dtype=F64) * s.T])
    t = t[(t >= s.t_min) & (t <= s.T)]
    a, sg, lam = s.alpha(t), s.sigma(t), s.lambda_(t)
    # t_of_lambda inverts lambda_ both ways
    close((s.t_of_lambda(lam) - t) / t, np.zeros(len(t)), 1e-12)
    lam_grid = torch.linspace(float(lam.min()), float(lam.max()), 500, dtype=F64)
    close(s.lambda_(s.t_of_lambda(lam_grid)), lam_grid, 1e-10)
    # lambda = log alpha - log sigma, decreasing in t
    close(lam, torch.log(a) - torch.log(sg), 1e-12)
    assert torch.all(torch.diff(s.lambda_(torch.linspace(s.t_min, s.T, 2001, dtype=F64))) < 0)
    if s.kind == "vp":
        close(a ** 2 + sg ** 2, np.ones(len(t)), 1e-14)
    elif s.kind == "rf":   # rectified flow: alpha = 1 - t, sigma = t
        close(a + sg, np.ones(len(t)), 1e-15)
        close(sg, t, 0)
    else:
        close(a, np.ones(len(t)), 0)
        close(sg, t, 0)
    # t = 0 is the data point
    assert float(s.alpha(0.0)) == 1.0 and float(s.sigma(0.0)) == 0.0 and float(s.lambda_(0.0)) == math.inf
    assert float(s.t_of_lambda(math.inf)) == 0.0
    # d log(alpha)/d lambda, which the PF-ODE in lambda uses
    tt = torch.linspace(s.t_min, s.T, 50, dtype=F64)[1:-1].requires_grad_(True)
    la_t, = torch.autograd.grad(s.log_alpha(tt).sum() + 0 * tt.sum(), tt)   # VE: log alpha = 0
    lam_t, = torch.autograd.grad(s.lambda_(tt).sum(), tt)
    close(la_t / lam_t, s.dlog_alpha_dlambda(s.lambda_(tt.detach())), 1e-10)


def test_official_skip_types_n10():
    """Table 1.5: N = 10 on the discrete DDPM schedule from t = 1 to 1e-3."""
    s = VPDiscrete()
    g = make_grid("logSNR", s, 10)
    close(g, [1, .89929, .78582, .65359, .49311, .30331, .13904, .05272, .01780, .00495, .001], 0.000005)
    close(s.model_time(g), [999, 898.29, 784.82, 652.59, 492.11, 302.31, 138.04, 51.72, 16.80, 3.95, 0], 0.005)
    close(make_grid("time_uniform", s, 10)[[0, 1, 2, 9, 10]], [1, .9001, .8002, .1009, .001], 1e-12)
    close(make_grid("time_quadratic", s, 10),
          [1, .8157, .65016, .50337, .37534, .26606, .17554, .10377, .05076, .0165, .001], 0.00005)


def test_karras_example():
    """Section 1.6: n = 10 sigmas on [0.002, 80] (our grid counts intervals: 9 steps between the 10 sigmas)."""
    g = make_grid("karras", VE(), 9)
    close(g, [80, 42.4152, 21.1087, 9.7232, 4.0661, 1.5017, 0.4700, 0.1166, 0.0204, 0.002], 0.00005)
    # on a VP schedule the grid is the same in sigma~ = e^-lambda, rho is an option
    s = VPLinear()
    sg = torch.exp(-s.lambda_(make_grid("karras", s, 9, rho=3.0)))
    smax, smin = float(torch.exp(-s.lambda_(1.0))), float(torch.exp(-s.lambda_(1e-3)))
    ramp = torch.linspace(0, 1, 10, dtype=F64)
    close(sg, (smax ** (1 / 3) + ramp * (smin ** (1 / 3) - smax ** (1 / 3))) ** 3, 1e-9)


@pytest.mark.parametrize("spacing,n,steps", [
    ("leading", 5, [800, 600, 400, 200, 0]),
    ("leading", 10, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", 5, [999, 799, 599, 399, 199]),
    ("trailing", 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", 5, [999, 799, 599, 400, 200]),       # DPMSolverMultistep / UniPC linspace
    ("linspace", 10, [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]),
])
def test_diffusers_spacings(spacing, n, steps):
    """Table 1.7: the evaluated training steps, then the final jump to t = 0."""
    s = VPDiscrete()
    g = make_grid(spacing, s, n)
    close(s.model_time(g[:-1]), steps, 1e-9)
    assert float(g[-1]) == 0.0 and ends_at_data(spacing, s)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_grids_decrease_with_exact_endpoints(name):
    s = SCHEDULES[name]()
    for grid_name in CONTINUOUS_GRIDS:
        assert not ends_at_data(grid_name, s)
        for steps in list(range(1, 41)) + [100, 500]:
            g = make_grid(grid_name, s, steps)
            assert g.dtype == F64 and len(g) == steps + 1
            assert float(g[0]) == s.T and float(g[-1]) == s.t_min, (grid_name, steps)
            assert torch.all(g[1:] < g[:-1]), (grid_name, steps)
    for grid_name in DIFFUSERS_GRIDS:
        if s.num_train_steps is None:
            with pytest.raises(ValueError, match="discrete"):
                make_grid(grid_name, s, 10)
            continue
        for steps in list(range(1, 41)) + [100, 500, 999]:
            g = make_grid(grid_name, s, steps)
            assert len(g) == steps + 1 and float(g[-1]) == 0.0 and torch.all(g[1:] < g[:-1]), (grid_name, steps)
        with pytest.raises(ValueError, match="repeats a training step"):
            make_grid(grid_name, s, 1001)
    for grid_name in FLOW_GRIDS:
        if s.kind != "rf":
            with pytest.raises(ValueError, match="needs a rectified-flow schedule"):
                make_grid(grid_name, s, 10)
            continue
        assert ends_at_data(grid_name, s)
        for steps in list(range(1, 41)) + [100, 500]:
            g = make_grid(grid_name, s, steps)
            assert len(g) == steps + 1 and float(g[-1]) == 0.0 and torch.all(g[1:] < g[:-1]), (grid_name, steps)


def test_grid_errors():
    with pytest.raises(ValueError, match="unknown grid 'nope'.*logSNR"):
        make_grid("nope", VE(), 10)
    with pytest.raises(ValueError, match="at least 1 step"):
        make_grid("logSNR", VE(), 0)
    assert set(GRIDS) == set(CONTINUOUS_GRIDS + DIFFUSERS_GRIDS + FLOW_GRIDS)
