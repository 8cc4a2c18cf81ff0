"""Algebraic identities between solvers, float64 on the exact gmm2d oracle."""
import pytest
import torch

import solvers
from solvers import Denoiser, get_solver, make_grid, Plan

F64 = torch.float64
TOL = 1e-12


def grids(model):
    """A few grids on the model's schedule, including one that ends at sigma = 0 where there is one."""
    out = [make_grid("logSNR", model.schedule, 10), make_grid("karras", model.schedule, 7),
           make_grid("time_uniform", model.schedule, 4)]
    if model.schedule.num_train_steps:
        out.append(make_grid("linspace", model.schedule, 9))
    return out


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-discrete", "vp-cosine", "ve"])
def test_first_order_solvers_coincide(gmm, x_T, schedule):
    model = gmm(schedule)
    xT = x_T(64, seed=1, scale=float(model.schedule.sigma(model.schedule.T)))
    for grid in grids(model):
        ref = get_solver("ddim").sample_on(Denoiser(model), xT, grid)
        assert torch.isfinite(ref).all()
        for spec in ("dpm-solver-1", "euler"):
            x = get_solver(spec).sample_on(Denoiser(model), xT, grid)
            assert (x - ref).abs().max() <= TOL, spec
        # the multistep solvers' first step is first order, and a singlestep one planned at 1 NFE is: run them
        # one interval at a time
        for spec in ("dpmpp-2m", "dpmpp-3m", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s"):
            x = xT
            for s, t in zip(grid[:-1], grid[1:]):
                x = get_solver(spec).sample(Denoiser(model, budget=1), x, Plan(torch.stack([s, t]), (1,)))
            assert (x - ref).abs().max() <= TOL, spec


def test_ddim_eta(gmm, x_T):
    model = gmm("vp-linear")
    xT = x_T(64, seed=2)
    grid = make_grid("time_uniform", model.schedule, 10)
    s = get_solver("ddim:eta=1.0")
    assert s.stochastic and not get_solver("ddim").stochastic
    a = s.sample_on(Denoiser(model), xT, grid, generator=torch.Generator().manual_seed(5))
    b = s.sample_on(Denoiser(model), xT, grid, generator=torch.Generator().manual_seed(5))
    c = s.sample_on(Denoiser(model), xT, grid, generator=torch.Generator().manual_seed(6))
    d = get_solver("ddim").sample_on(Denoiser(model), xT, grid)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert (a - d).abs().max() > 1e-3
    # eta = 0 through the stochastic code path's generator argument is still deterministic DDIM
    e = get_solver("ddim:eta=0").sample_on(Denoiser(model), xT, grid, generator=torch.Generator().manual_seed(5))
    assert torch.equal(d, e)


@pytest.mark.parametrize("spec", ["ddim", "dpmpp-2m", "dpmpp-3m", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3",
                                  "dpmpp-2s", "euler", "heun"])
@pytest.mark.parametrize("vp", ["vp-linear", "vp-cosine", "vp-discrete"])
def test_vp_and_ve_give_the_same_samples_on_the_same_lambda_grid(gmm, x_T, spec, vp):
    """x_vp = alpha * x_ve: the exponential integrators are written in lambda with data prediction, and EDM's
    Euler/Heun in x~ = x/alpha, sigma~ = e^-lambda (so, unlike a Heun step in VP time, they are invariant too)."""
    m_vp, m_ve = gmm(vp), gmm("ve")
    g_vp = make_grid("logSNR", m_vp.schedule, 12)
    g_ve = m_ve.schedule.t_of_lambda(m_vp.schedule.lambda_(g_vp))
    xT = x_T(64, seed=3)
    x_vp = get_solver(spec).sample_on(Denoiser(m_vp), xT, g_vp)
    x_ve = get_solver(spec).sample_on(Denoiser(m_ve), xT / m_vp.schedule.alpha(g_vp[0]), g_ve)
    assert (x_vp - m_vp.schedule.alpha(g_vp[-1]) * x_ve).abs().max() <= 1e-11


def test_generic_ode_solvers_are_not_scale_invariant(gmm, x_T):
    """The torchdiffeq solvers integrate dx/dlambda in x itself: VP and VE runs differ (by the method's error)."""
    m_vp, m_ve = gmm("vp-linear"), gmm("ve")
    g_vp = make_grid("logSNR", m_vp.schedule, 12)
    g_ve = m_ve.schedule.t_of_lambda(m_vp.schedule.lambda_(g_vp))
    xT = x_T(64, seed=3)
    x_vp = get_solver("ode-euler").sample_on(Denoiser(m_vp), xT, g_vp)
    x_ve = get_solver("ode-euler").sample_on(Denoiser(m_ve), xT / m_vp.schedule.alpha(g_vp[0]), g_ve)
    assert (x_vp - m_vp.schedule.alpha(g_vp[-1]) * x_ve).abs().max() > 1e-3


def test_solvers_are_stateless(gmm, x_T):
    model = gmm("vp-linear")
    xT = x_T(16, seed=4)
    for spec in ("dpmpp-3m", "dpm-solver-3", "heun", "ode-rk4"):
        s = get_solver(spec)
        grid = s.plan(model.schedule, 12)
        a = s.sample_on(Denoiser(model, budget=12), xT, grid)
        b = s.sample_on(Denoiser(model, budget=12), xT, grid)
        assert torch.equal(a, b), spec


def test_float32_samples_stay_float32(gmm, x_T):
    model = gmm("vp-linear")
    xT = x_T(64, seed=5)
    for spec in ("ddim", "dpmpp-2m", "dpm-solver-3", "heun"):
        s = get_solver(spec)
        grid = s.plan(model.schedule, 15)
        x64 = s.sample_on(Denoiser(model), xT, grid)
        x32 = s.sample_on(Denoiser(model), xT.float(), grid)
        assert x32.dtype == torch.float32 and x64.dtype == F64
        assert torch.isfinite(x32).all(), spec


def test_dopri5_on_a_grid_ending_at_sigma_zero(gmm, x_T):
    """An adaptive solve on a diffusers spacing integrates from T to t_min, then takes the x0 jump."""
    model = gmm("vp-discrete")
    xT = x_T(16, seed=6)
    s = get_solver("ode-dopri5:grid=trailing,rtol=1e-8,atol=1e-8")
    grid = s.plan(model.schedule, 10).grid
    assert grid.tolist() == [model.schedule.T, model.schedule.t_min, 0.0]
    x = s.sample_on(Denoiser(model), xT, grid)
    through = get_solver("ode-dopri5:rtol=1e-8,atol=1e-8").sample_on(
        Denoiser(model), xT, torch.tensor([model.schedule.T, model.schedule.t_min], dtype=F64))
    assert (x - Denoiser(model).x0(through, model.schedule.t_min)).abs().max() <= 1e-12
