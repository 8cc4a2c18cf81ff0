"""NFE accounting for every registered solver (those other packages or files register too).

Rule: through Denoiser(model, budget=nfe) on its own plan(schedule, nfe), a solver spends exactly nfe
evaluations. Where its per-step cost makes that impossible (a declared nfe_per_step > 1 whose steps all
cost the same: ode-midpoint 2, ode-rk4 4) it spends budget - nfe_per_step < used <= budget. Heun declares 2
a step but spends any budget exactly (an Euler step takes the odd NFE). Nothing reaches the network except
through the Denoiser, and a budget can never be exceeded.
"""
import sys
from pathlib import Path

import pytest
import torch

import solvers
from solvers import Denoiser, NFEBudgetExceeded
from solvers import get_solver as _get_solver
from solvers.denoiser import Network
from solvers.registry import _REGISTRY

F64 = torch.float64
TESTS_DIR = Path(__file__).resolve().parent
EXACT_DESPITE_STEP_COST = {"heun", "flow-heun"}


def _registered():
    """Every registered, budgeted solver, except test-only ones that test files register."""
    names = []
    for name in solvers.list_solvers():
        cls = _REGISTRY[name]
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
        if Path(module_file).resolve().parent == TESTS_DIR or cls.adaptive:
            continue
        names.append(name)
    return names


SOLVERS = _registered()


def model_of(gmm, name, schedule):
    """The gmm2d oracle on `schedule`; a flow sampler's on the rectified flow (it refuses any other)."""
    return gmm("rectified-flow", "flow") if _REGISTRY[name].flow_sampler else gmm(schedule)


def get_solver(spec):
    """DC solvers sample with calibrated ratios the harness gives them; here a constant ratio stands in."""
    solver = _get_solver(spec)
    if solver.needs_calibration:
        solver.ratio = 1.1
    return solver


class Counting(Network):
    """Wraps a model and counts the network calls (and the samples passed) that actually happen."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.schedule, self.prediction, self.num_classes = model.schedule, model.prediction, model.num_classes

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.model.forward(x, t, y)


def check_spend(solver, model, nfe, xT):
    counted = Counting(model)
    den = Denoiser(counted, budget=nfe)
    x = solver.sample_on(den, xT, solver.plan(model.schedule, nfe))
    assert torch.isfinite(x).all() and x.shape == xT.shape
    assert counted.calls == den.nfe, "the network was called outside the Denoiser"
    used = den.nfe
    if solver.name in EXACT_DESPITE_STEP_COST or solver.nfe_per_step == 1:
        assert used == nfe, f"{solver.spec}: budget {nfe}, used {used}"
    else:
        assert nfe - solver.nfe_per_step < used <= nfe, f"{solver.spec}: budget {nfe}, used {used}"
    return used


def test_core_solvers_are_registered():
    for name in ("ddim", "euler", "heun", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s", "dpmpp-2m",
                 "dpmpp-3m", "ode-euler", "ode-midpoint", "ode-rk4"):
        assert name in SOLVERS
    assert "ode-dopri5" in solvers.list_solvers() and _REGISTRY["ode-dopri5"].adaptive


@pytest.mark.parametrize("name", SOLVERS)
def test_budget_is_spent(gmm, x_T, name):
    """Default grid, every NFE from min_nfe to 50."""
    model, xT = model_of(gmm, name, "vp-linear"), x_T(8, seed=0)
    solver = get_solver(name)
    for nfe in range(solver.min_nfe, 51):
        check_spend(solver, model, nfe, xT)


@pytest.mark.parametrize("name", SOLVERS)
def test_budget_is_spent_on_grids_ending_at_sigma_zero(gmm, x_T, name):
    """diffusers' spacings end at t = 0, whose last interval is a 1-NFE jump to x0 for every solver (a flow
    sampler: on diffusers' DPM-Solver flow grid)."""
    model, xT = model_of(gmm, name, "vp-discrete"), x_T(8, seed=0)
    solver = get_solver(f"{name}:grid={'flow_linspace' if _REGISTRY[name].flow_sampler else 'trailing'}")
    for nfe in range(solver.min_nfe, 21):
        check_spend(solver, model, nfe, xT)


@pytest.mark.parametrize("name", SOLVERS)
def test_budget_is_never_exceeded(gmm, x_T, name):
    model, xT = model_of(gmm, name, "vp-linear"), x_T(8, seed=0)
    solver = get_solver(name)
    for nfe in sorted({solver.min_nfe, solver.min_nfe + 1, 7, 12}):
        if nfe < solver.min_nfe:
            continue
        grid = solver.plan(model.schedule, nfe)
        used = check_spend(solver, model, nfe, xT)
        # one NFE short of its plan: the solver follows the plan (it never adapts to what is left) and raises
        # before the network is called past the budget
        counted = Counting(model)
        den = Denoiser(counted, budget=used - 1)
        with pytest.raises(NFEBudgetExceeded):
            solver.sample_on(den, xT, grid)
        assert counted.calls == den.nfe == used - 1
        # a zero budget raises before the network is called
        counted = Counting(model)
        with pytest.raises(NFEBudgetExceeded):
            solver.sample_on(Denoiser(counted, budget=0), xT, grid)
        assert counted.calls == 0


@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "dpmpp-3m", "euler", "ode-euler", "ode-rk4"])
def test_fixed_plans_raise_when_short(gmm, x_T, name):
    model, xT = gmm("vp-linear"), x_T(8, seed=0)
    solver = get_solver(name)
    grid = solver.plan(model.schedule, 12)
    with pytest.raises(NFEBudgetExceeded):
        solver.sample_on(Denoiser(model, budget=11), xT, grid)


def test_adaptive_solver_reports_what_it_used(gmm, x_T):
    model, xT = gmm("vp-linear"), x_T(8, seed=0)
    solver = get_solver("ode-dopri5")
    den = Denoiser(model)
    solver.sample_on(den, xT, solver.plan(model.schedule, 10))
    assert den.nfe > 0
    with pytest.raises(NFEBudgetExceeded):
        solver.sample_on(Denoiser(model, budget=5), xT, solver.plan(model.schedule, 10))
