"""Speed benchmarks (pytest-benchmark); not part of the test run.

    python -m pytest benchmarks --benchmark-enable -p no:cacheprovider
"""
import pytest
import torch

from models import load_model
from solvers import Denoiser, get_solver

SOLVERS = ["ddim", "heun", "dpmpp-2m", "dpmpp-3m", "dpm-solver-3", "ode-rk4"]


@pytest.fixture(scope="module")
def gmm():
    return load_model("gmm2d")


@pytest.mark.parametrize("spec", SOLVERS)
def test_sampling_speed_gmm2d(benchmark, gmm, spec):
    solver = get_solver(spec)
    grid = solver.plan(gmm.schedule, 20)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))

    def run():
        return solver.sample_on(Denoiser(gmm, budget=20), x_T, grid)

    out = benchmark(run)
    assert torch.isfinite(out).all()


def test_solver_overhead_vs_network(benchmark, gmm):
    """Pure solver overhead: a zero-cost model isolates the bookkeeping of dpmpp-3m at NFE 50."""
    class Zero:
        schedule, prediction, num_classes, shape = gmm.schedule, "x0", None, (2,)

        def forward(self, x, t, y=None):
            return torch.zeros_like(x)

    solver = get_solver("dpmpp-3m")
    grid = solver.plan(gmm.schedule, 50)
    x_T = torch.randn(2000, 2)
    benchmark(lambda: solver.sample_on(Denoiser(Zero(), budget=50), x_T, grid))
