"""Parity with diffusers' schedulers in float64, same model, same timesteps, identical schedule tables.

What diffusers 0.42.1 does and how both sides are made to use the same numbers:
* betas/alphas_cumprod are built in float32. Our VPDiscrete is built from the scheduler's own
  alphas_cumprod (VPDiscrete(alphas_cumprod=...)) and the scheduler's table is replaced by the float64 copy
  of the same values (DDIM also reads final_alpha_cumprod, set to a float64 1).
* DPMSolverMultistepScheduler.set_timesteps casts its sigma table to float32 (`.astype(np.float32)`):
  after set_timesteps the sigmas are recomputed in float64 from the same table (sqrt((1 - abar)/abar) at
  the integer timesteps, then the final 0, exactly its formula).
* DPMSolverMultistepScheduler.step casts the sample to float32 before every update (`sample.to(torch.float32)`,
  "upcast to avoid precision issues"). That rounding alone moves the final samples by up to ~2e-5 here,
  so the scheduler module's `torch` is seen through a proxy whose float32 is float64 for these tests.
* The diffusers side calls the model with the integer timestep n; the oracle (gmm2d, eps prediction) is
  evaluated at the continuous t = t_of_step(n) = (n + 1)/1000, the time our grids put there.
"""
import types

import numpy as np
import pytest
import torch

import models
import solvers
from solvers import Denoiser, VPDiscrete, get_solver, make_grid

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install nfebench[test])")
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler  # noqa: E402
import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_module  # noqa: E402

# diffusers' set_timesteps calls np.array on the (here float64 torch) alphas_cumprod table
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

F64 = torch.float64
NS = [1, 2, 3, 5, 8, 10, 14, 15, 16, 20, 25]   # 14/15/16 straddle diffusers' lower_order_final rule (< 15)
TOL = 1e-6


class _Float64Torch(types.ModuleType):
    """`torch` as the DPM-Solver scheduler module sees it in these tests: float32 means float64."""
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.fixture
def no_downcast(monkeypatch):
    monkeypatch.setattr(dpm_module, "torch", _Float64Torch("torch"))


def common_tables(scheduler):
    """float64 copies of the scheduler's alphas_cumprod on both sides; returns the eps-prediction oracle."""
    ac = scheduler.alphas_cumprod.to(F64).clone()
    scheduler.alphas_cumprod = ac
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    model = models.load_model("gmm2d:schedule=vp-discrete,prediction=eps", dtype=F64)
    model.schedule = VPDiscrete(alphas_cumprod=ac)
    return model


def set_timesteps(scheduler, n):
    scheduler.set_timesteps(n)
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        ac, ts = scheduler.alphas_cumprod, scheduler.timesteps
        scheduler.sigmas = torch.cat([((1 - ac[ts]) / ac[ts]).sqrt(), torch.zeros(1, dtype=F64)])


def run_diffusers(scheduler, model, x_T, n, **step_kw):
    set_timesteps(scheduler, n)
    x = x_T.clone()
    for step in scheduler.timesteps:
        t = model.schedule.t_of_step(int(step)).expand(x.shape[0])
        x = scheduler.step(model.forward(x, t), step, x, **step_kw).prev_sample
    return x


@pytest.fixture(scope="module")
def xT():
    return torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("n", NS)
def test_ddim_matches_diffusers(xT, n):
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    model = common_tables(sch)
    ref = run_diffusers(sch, model, xT, n)
    grid = make_grid("leading", model.schedule, n)
    assert torch.equal(grid[:-1], model.schedule.t_of_step(sch.timesteps.to(F64)))
    den = Denoiser(model, budget=n)
    x = get_solver("ddim").sample_on(den, xT, grid)
    assert den.nfe == n
    assert (x - ref).abs().max() <= TOL


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("n", [5, 10, 20])
def test_ddim_eta_matches_diffusers(xT, n, eta):
    """Stochastic DDIM (ours in sigma~ as k-diffusion's euler_ancestral) == diffusers' DDIM eq. 12 with the
    same noise: our sampler draws one z per step but the last from `generator`; diffusers gets them as
    variance_noise (its last step onto abar = 1 has zero variance)."""
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    model = common_tables(sch)
    sch.set_timesteps(n)
    g = torch.Generator().manual_seed(7)
    x = xT.clone()
    for i, step in enumerate(sch.timesteps):
        t = model.schedule.t_of_step(int(step)).expand(x.shape[0])
        z = torch.randn(x.shape, generator=g, dtype=F64) if i < n - 1 else torch.zeros_like(x)
        x = sch.step(model.forward(x, t), step, x, eta=eta, variance_noise=z).prev_sample
    ours = get_solver(f"ddim:eta={eta}").sample_on(Denoiser(model), xT, make_grid("leading", model.schedule, n),
                                                 generator=torch.Generator().manual_seed(7))
    assert (ours - x).abs().max() <= TOL


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("n", NS)
def test_dpmpp_multistep_matches_diffusers(xT, no_downcast, order, n):
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=order, final_sigmas_type="zero",
                                      timestep_spacing="linspace")
    assert sch.config.lower_order_final and sch.config.solver_type == "midpoint"
    model = common_tables(sch)
    ref = run_diffusers(sch, model, xT, n)
    grid = make_grid("linspace", model.schedule, n)
    assert torch.equal(grid[:-1], model.schedule.t_of_step(sch.timesteps.to(F64)))
    den = Denoiser(model, budget=n)
    x = get_solver(f"dpmpp-{order}m").sample_on(den, xT, grid)
    assert den.nfe == n
    assert (x - ref).abs().max() <= TOL


@pytest.mark.parametrize("n", [10, 20])
def test_dpmpp_2m_taylor_matches_diffusers_heun(xT, no_downcast, n):
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, solver_type="heun")
    model = common_tables(sch)
    ref = run_diffusers(sch, model, xT, n)
    x = get_solver("dpmpp-2m:solver_type=taylor").sample_on(Denoiser(model), xT, make_grid("linspace", model.schedule, n))
    assert (x - ref).abs().max() <= TOL


@pytest.mark.parametrize("n", [5, 10, 14, 15, 16, 20])
def test_dpmpp_without_lower_order_final_matches_diffusers(xT, no_downcast, n):
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=3, lower_order_final=False)
    model = common_tables(sch)
    ref = run_diffusers(sch, model, xT, n)
    x = get_solver("dpmpp-3m:lower_order_final=false").sample_on(Denoiser(model), xT,
                                                              make_grid("linspace", model.schedule, n))
    assert (x - ref).abs().max() <= TOL


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 13, 20, 25, 50, 100, 250, 999])
def test_spacings_match_diffusers_timesteps(n):
    sched = VPDiscrete()
    for spacing in ("leading", "trailing"):
        sch = DDIMScheduler(timestep_spacing=spacing)
        sch.set_timesteps(n)
        assert np.array_equal(np.rint(sched.model_time(make_grid(spacing, sched, n)[:-1]).numpy()),
                              sch.timesteps.numpy()), spacing
    for spacing in ("linspace", "trailing"):
        sch = DPMSolverMultistepScheduler(timestep_spacing=spacing)
        sch.set_timesteps(n)
        assert np.array_equal(np.rint(sched.model_time(make_grid(spacing, sched, n)[:-1]).numpy()),
                              sch.timesteps.numpy()), spacing

