"""ctm-gamma and the exact flow-map models.

- On a Gaussian data distribution the PF-ODE flow map is closed-form, so the sampler is checked against the spec's
  loop written out by hand (sony/ctm `sample_gamma_multistep_`, spec 3.5) and, for every gamma, against the exact
  law of its output (an exact G keeps every marginal, so any gamma must return the data law convolved with
  N(0, sigma~_min^2)): a wrong jump time or re-noising std breaks it.
- Identities: gamma = 0 on an exact flow map is the exact ODE solution at any NFE; gamma = 1 on a VE flow map is
  cm-multistep; gamma = 0 on a model without a flow map is DDIM on the same grid.
"""
import math

import pytest
import torch

import models
from bench.cli import main
from models.base import DiffusionModel
from solvers import Denoiser, NFEBudgetExceeded, SpecError, get_solver, make_grid
from solvers.schedules import VE, VPLinear

F64 = torch.float64
SIGMA_D = 0.7


class GaussianFlow(DiffusionModel):
    """Data N(0, SIGMA_D^2 I): x_t has variance v(t) = alpha^2 SIGMA_D^2 + sigma^2 and the PF-ODE is the linear map
    G(x, t, s) = sqrt(v(s)/v(t)) x; its x0-prediction is E[x0|x_t] = alpha SIGMA_D^2 / v(t) x."""

    prediction, shape = "x0", (3,)
    has_flow_map = True

    def __init__(self, schedule):
        self.schedule = schedule

    def v(self, t):
        return self.schedule.alpha(t) ** 2 * SIGMA_D ** 2 + self.schedule.sigma(t) ** 2

    def forward(self, x, t, y=None):
        return (self.schedule.alpha(t) * SIGMA_D ** 2 / self.v(t))[:, None] * x

    def flow_map(self, x, t, s, y=None, guidance=1.0):
        return torch.sqrt(self.v(s) / self.v(t))[:, None] * x


def _noise(n, scale, seed=0):
    return torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(seed)) * scale


def _hand_written_ve(model, x_T, grid, gamma, seed):
    """The reference loop (VE): s = sqrt(1 - gamma^2)(sigma_{i+1} - sigma_min) + sigma_min, x = G(x, sigma_i, s),
    then x + sqrt(sigma_{i+1}^2 - s^2) z except after the last jump."""
    g, x, sig_min, n = torch.Generator().manual_seed(seed), x_T, grid[-1], len(grid) - 1
    for i in range(n):
        s = math.sqrt(1 - gamma ** 2) * (grid[i + 1] - sig_min) + sig_min
        x = model.flow_map(x, grid[i].expand(x.shape[0]), s.expand(x.shape[0]))
        if i < n - 1:
            x = x + torch.sqrt(grid[i + 1] ** 2 - s ** 2) * torch.randn(x.shape, generator=g, dtype=F64)
    return x


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("nfe", [1, 2, 5])
def test_the_reference_loop_written_out(gamma, nfe):
    model = GaussianFlow(VE())
    solver = get_solver(f"ctm-gamma:gamma={gamma}")
    grid = solver.plan(model.schedule, nfe).grid
    torch.testing.assert_close(grid, make_grid("karras", model.schedule, nfe))
    x_T = _noise(64, 80.0)
    d = Denoiser(model, budget=nfe)
    got = solver.sample_on(d, x_T, grid, generator=torch.Generator().manual_seed(3))
    assert d.nfe == nfe
    torch.testing.assert_close(got, _hand_written_ve(model, x_T, grid, gamma, 3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", [VE(), VPLinear()], ids=["ve", "vp-linear"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_every_gamma_keeps_the_exact_law(schedule, gamma):
    """x_T drawn from the exact marginal at T: the output must be N(0, v(t_M)) per coordinate whatever gamma."""
    model = GaussianFlow(schedule)
    T, t_end = schedule.T, schedule.t_min
    n = 40_000
    x_T = _noise(n, float(torch.sqrt(model.v(torch.tensor(T, dtype=F64)))), seed=1)
    solver = get_solver(f"ctm-gamma:gamma={gamma}")
    out = solver.sample_on(Denoiser(model), x_T, solver.plan(schedule, 4), generator=torch.Generator().manual_seed(2))
    var = out.var(0)
    expected = float(model.v(torch.tensor(t_end, dtype=F64)))
    # sample variance of 40,000 normals: relative sd sqrt(2/n) = 0.7 %; 3 coordinates, 4 % is > 5 sd
    assert torch.all((var / expected - 1).abs() < 0.04), (var, expected)
    if gamma == 0.0:   # deterministic: exactly the linear map
        torch.testing.assert_close(out, x_T * math.sqrt(expected / float(model.v(torch.tensor(T, dtype=F64)))))


def test_a_wrong_renoising_would_be_caught():
    """The law test has teeth: skipping the re-noise (gamma = 0.9 jumps, no noise) shrinks the variance."""
    model = GaussianFlow(VE())
    solver = get_solver("ctm-gamma:gamma=0.9")
    x_T = _noise(40_000, float(torch.sqrt(model.v(torch.tensor(80.0, dtype=F64)))), seed=1)
    grid = solver.plan(model.schedule, 4).grid
    x = x_T
    for i in range(4):
        x = model.flow_map(x, grid[i].expand(x.shape[0]), solver.jump_time(model.schedule, grid, i).expand(x.shape[0]))
    assert float(x.var(0).mean()) < 0.9 * float(model.v(grid[-1]))


@pytest.mark.parametrize("schedule", ["ve", "vp-discrete"])
def test_gamma_0_on_an_exact_flow_map_is_the_exact_ode_solution(schedule):
    flow = models.load_model(f"gmm2d-flow:schedule={schedule}", dtype=F64)
    base = models.load_model(f"gmm2d:schedule={schedule}", dtype=F64)
    sched = flow.schedule
    x_T = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(sched.sigma(sched.T))
    exact = get_solver("ode-dopri5:rtol=1e-10,atol=1e-10").sample_on(
        Denoiser(base), x_T, torch.tensor([sched.T, sched.t_min], dtype=F64))
    for nfe in (1, 3, 6):
        d = Denoiser(flow, budget=nfe)
        got = get_solver("ctm-gamma").sample_on(d, x_T, get_solver("ctm-gamma").plan(sched, nfe))
        assert d.nfe == nfe
        assert float((got - exact).abs().max()) < 1e-3      # rtol 1e-6 per jump; seen 6e-5 (ve), 2.6e-4 (vp)


def test_gamma_1_on_a_ve_flow_map_is_cm_multistep():
    flow = models.load_model("gmm2d-flow:schedule=ve", dtype=F64)
    x_T = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(4)) * 80
    for nfe in (1, 2, 4):
        ctm, cm = get_solver("ctm-gamma:gamma=1"), get_solver("cm-multistep")
        a = ctm.sample_on(Denoiser(flow), x_T, ctm.plan(flow.schedule, nfe), generator=torch.Generator().manual_seed(9))
        b = cm.sample_on(Denoiser(flow), x_T, cm.plan(flow.schedule, nfe), generator=torch.Generator().manual_seed(9))
        # cm-multistep reads f through the Denoiser's x0 -> eps -> x0 round trip: seen 1.9e-14
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", ["vp-discrete", "ve"])
def test_gamma_0_without_a_flow_map_is_ddim(schedule):
    """CTM's euler parametrization with the x0-prediction as g is DDIM's step."""
    model = models.load_model(f"gmm2d:schedule={schedule}", dtype=F64)
    x_T = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(5)) * float(model.schedule.sigma(model.schedule.T))
    grid = make_grid("karras", model.schedule, 6)
    a = get_solver("ctm-gamma").sample_on(Denoiser(model), x_T, grid)
    b = get_solver("ddim:grid=karras").sample_on(Denoiser(model), x_T, grid)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_guided_flow_map_is_the_guided_ode():
    """digits-oracle-flow at guidance 3: gamma = 0 lands where the guided PF-ODE of digits-oracle does."""
    flow, base = models.load_model("digits-oracle-flow", dtype=F64), models.load_model("digits-oracle", dtype=F64)
    sched = flow.schedule
    x_T = torch.randn(6, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    exact = get_solver("ode-dopri5:rtol=1e-8,atol=1e-8").sample_on(
        Denoiser(base, y=y, guidance=3.0), x_T, torch.tensor([sched.T, sched.t_min], dtype=F64))
    d = Denoiser(flow, y=y, guidance=3.0, budget=2)
    got = get_solver("ctm-gamma").sample_on(d, x_T, get_solver("ctm-gamma").plan(sched, 2))
    assert d.nfe == 2
    assert float((got - exact).abs().max()) < 1e-3
    # and the consistency function at T is the same map straight to t_min (cm-multistep, 1 NFE)
    one = get_solver("cm-multistep").sample_on(Denoiser(flow, y=y, guidance=3.0), x_T, make_grid("karras", sched, 1))
    assert float((one - exact).abs().max()) < 1e-3


def test_budget_and_errors():
    model = GaussianFlow(VE())
    solver = get_solver("ctm-gamma:gamma=0.5")
    with pytest.raises(NFEBudgetExceeded):
        solver.sample_on(Denoiser(model, budget=3), _noise(4, 80.0), solver.plan(model.schedule, 4),
                      generator=torch.Generator().manual_seed(0))
    for bad in ("-0.1", "1.5"):
        with pytest.raises(SpecError, match=r"gamma must be in \[0, 1\]"):
            get_solver(f"ctm-gamma:gamma={bad}")
    flow = models.load_model("gmm2d-flow", dtype=F64)
    t = torch.full((2,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="jumps towards the data"):
        flow.flow_map(torch.zeros(2, 2, dtype=F64), t, t + 0.1)
    with pytest.raises(ValueError, match="one t and one s"):
        flow.flow_map(torch.zeros(2, 2, dtype=F64), torch.tensor([0.5, 0.4], dtype=F64), t * 0)
    with pytest.raises(ValueError, match="has no flow map"):
        Denoiser(models.load_model("gmm2d")).flow_map(torch.zeros(2, 2), 0.5, 0.1)


def test_cli_run_on_a_flow_map(tmp_path):
    """The harness end to end: traj_rmse is measured against the base model's ODE, so gamma = 0 is ~0."""
    import pandas as pd
    out = tmp_path / "run"
    rc = main(["run", "--models", "gmm2d-flow", "--solvers", "ctm-gamma,ctm-gamma:gamma=0.5,cm-multistep",
               "--nfe", "1,2", "--samples", "200", "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 6 and (df.nfe_used == df.nfe).all()
    det = df[df.solver == "ctm-gamma"]
    assert (det.traj_rmse < 1e-3).all()
    assert (df[df.solver != "ctm-gamma"].query("nfe == 2").traj_rmse > 0.1).all()   # stochastic: other endpoints


def test_digits_flow_network_dtype_option():
    """The state is float64 either way; dtype= picks the network's precision."""
    flow = models.load_model("digits-flow:dtype=float32", dtype=F64)
    assert flow.base.net.inp.weight.dtype == torch.float32 and flow.ode_model is flow.base
    with pytest.raises(SpecError, match="dtype=float16"):
        models.load_model("digits-flow:dtype=float16")
