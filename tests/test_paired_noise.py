"""Paired noise: sample i of seed s starts from the same x_T for every solver and NFE."""
import torch

from bench.runner import Runner
from bench.spec import RunConfig
from solvers import Solver, register_solver

SEEN = []


@register_solver("test-record-xT")
class RecordXT(Solver):
    """Test-only solver: records the x_T it is given and spends its budget with DDIM-free evaluations."""

    def sample(self, denoiser, x_T, plan, generator=None):
        SEEN.append((denoiser.budget, x_T.clone()))
        for t in plan.grid[:-1]:
            denoiser.x0(x_T, t)
        return x_T


def test_same_noise_for_every_solver_and_nfe(tmp_path):
    SEEN.clear()
    spec = RunConfig(models=["gmm2d"], solvers=["test-record-xT", "test-record-xT:grid=karras"], nfe=[2, 5],
                   seeds=[0, 1], samples=64, metrics=["fid"])
    Runner(spec, tmp_path, log=lambda m: None).run()
    assert len(SEEN) == 2 * 2 * 2
    by_seed = {}
    for budget, x in SEEN:
        by_seed.setdefault(round(float(x[0, 0]), 12), []).append(x)
    assert len(by_seed) == 2                       # two seeds, two different noises
    for xs in by_seed.values():
        assert len(xs) == 4                        # 2 solvers x 2 NFE share it exactly
        for x in xs[1:]:
            assert torch.equal(x, xs[0])


def test_noise_does_not_depend_on_sample_count_prefix(tmp_path):
    from bench.runner import initial_noise
    from models import load_model
    m = load_model("gmm2d")
    a, b = initial_noise(m, 3, 100, torch.float32), initial_noise(m, 3, 200, torch.float32)
    assert torch.equal(a, b[:100])
