"""Shared fixtures: float64 gmm2d oracles and a helper that runs a solver at an NFE budget.

Tests marked `cuda` run only where torch sees a CUDA device and are skipped elsewhere (CI has none)."""
import pytest
import torch

import models
import solvers

CUDA = torch.cuda.is_available()

F64 = torch.float64


@pytest.fixture(scope="session")
def gmm():
    """gmm(schedule='vp-linear', prediction='x0') -> a cached float64 gmm2d oracle."""
    cache = {}

    def get(schedule="vp-linear", prediction="x0"):
        key = (schedule, prediction)
        if key not in cache:
            cache[key] = models.load_model(f"gmm2d:schedule={schedule},prediction={prediction}", dtype=F64)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def run_solver():
    """run_solver(spec_or_solver, model, x_T, nfe, grid=None, **kw) -> (x_0, nfe_used), through a budgeted Denoiser."""
    def run(solver, model, x_T, nfe, grid=None, **kw):
        if isinstance(solver, str):
            solver = solvers.get_solver(solver)
        den = solvers.Denoiser(model, budget=nfe)
        if grid is None:
            grid = solver.plan(model.schedule, nfe)
        return solver.sample_on(den, x_T, grid, **kw), den.nfe
    return run


def noise(n, seed=0, scale=1.0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="session")
def x_T():
    """x_T(n, seed=0, scale=1.0) -> float64 (n, 2) standard normal noise times scale."""
    return noise


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped where torch sees none")


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
