"""The runner: divergence is recorded, failures never lose finished cells, outputs are written."""
import json
import math

import pandas as pd
import pytest
import torch

from bench.runner import Runner, plan
from bench.spec import RunConfig
from solvers import Solver, register_solver


@register_solver("test-half-nan")
class HalfNaN(Solver):
    """Test-only: DDIM-like spend of the budget, then every other sample set to NaN."""

    def sample(self, denoiser, x_T, plan, generator=None):
        x = x_T.clone()
        for t in plan.grid[:-1]:
            x = denoiser.x0(x, t)
        x[::2] = float("nan")
        return x


@register_solver("test-raises")
class Raises(Solver):
    """Test-only: always fails."""

    def sample(self, denoiser, x_T, plan, generator=None):
        raise RuntimeError("boom")


@register_solver("test-overspend")
class Overspend(Solver):
    """Test-only: tries to spend one NFE more than its budget."""

    def sample(self, denoiser, x_T, plan, generator=None):
        for _ in range(plan.nfe + 1):
            denoiser.x0(x_T, plan.grid[0])
        return x_T


def test_divergence_recorded_and_failures_isolated(tmp_path):
    spec = RunConfig(models=["gmm2d"], solvers=["test-half-nan", "test-raises", "test-overspend", "ddim"],
                   nfe=[3], samples=200, metrics=["fid", "traj_rmse"])
    logs = []
    summary = Runner(spec, tmp_path, log=logs.append).run()
    assert {c.solver for c, _ in summary["failed"]} == {"test-raises", "test-overspend"}
    assert any("NFE budget of 3 exhausted" in msg for _, msg in summary["failed"])
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.solver) == {"test-half-nan", "ddim"}
    half = df[df.solver == "test-half-nan"].iloc[0]
    assert half["diverged_frac"] == 0.5
    assert math.isfinite(half["fid"]) and math.isfinite(half["traj_rmse"])  # over the finite half only
    ddim = df[df.solver == "ddim"].iloc[0]
    assert ddim["diverged_frac"] == 0 and ddim["nfe_used"] == 3
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["spec"]["solvers"] == spec.solvers and meta["finished"] and "torch" in meta["versions"]


def test_traj_rmse_zero_for_the_reference_itself(tmp_path):
    """A dopri5 'solver' at the reference tolerance reproduces the cached reference exactly."""
    spec = RunConfig(models=["gmm2d"], solvers=["ode-dopri5"], nfe=[1], samples=100, metrics=["traj_rmse"],
                   dtype="float64")
    Runner(spec, tmp_path, log=lambda m: None).run()
    df = pd.read_csv(tmp_path / "results.csv")
    assert df["traj_rmse"].iloc[0] == 0.0
    assert df["nfe_used"].iloc[0] > 20  # adaptive: what it used, not a budget


def test_unconditional_models_skip_guidance(tmp_path):
    spec = RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[2], guidance=[1.0, 3.0], samples=50, metrics=["fid"])
    logs = []
    Runner(spec, tmp_path, log=logs.append).run()
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1
    assert any("unconditional: guidance 3 skipped" in m for m in logs)
    assert torch.load(next((tmp_path / "samples").glob("*.pt")))["x"].shape == (50, 2)


def test_cells_finished_by_another_process_are_not_rerun(tmp_path, monkeypatch):
    """Two processes on one run directory: a cell whose file appears while the grid runs is skipped."""
    spec = RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[3, 4, 5], samples=50, metrics=["fid"])
    runner = Runner(spec, tmp_path, log=lambda *_: None)
    real, ran = runner.merge, []

    def merge(job):   # every computed cell is merged from its shards once
        ran.append(job.cell.nfe)
        result = real(job)
        if job.cell.nfe == 3:  # meanwhile "another process" finishes NFE 5
            other = next(c for c in plan(spec)[0] if c.nfe == 5)
            path = runner.store.cell_path(other.key)  # written behind this store's back
            path.write_text(json.dumps({**result.row, "nfe": 5}))
        return result

    monkeypatch.setattr(runner, "merge", merge)
    runner.run()
    assert ran == [3, 4]
    assert sorted(pd.read_csv(tmp_path / "results.csv").nfe) == [3, 4, 5]


def test_reference_samples_scores_traj_rmse_on_the_first_k(tmp_path):
    """traj_rmse over the first k samples equals the metric of those samples against their own reference."""
    from bench.metrics import traj_rmse
    from bench.reference import reference_solution
    from bench.runner import initial_noise
    from models import load_model

    spec = RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[6], samples=300, metrics=["traj_rmse"],
                   reference_samples=40)
    runner = Runner(spec, tmp_path, log=lambda *_: None)
    runner.run()
    got = pd.read_csv(tmp_path / "results.csv").iloc[0]["traj_rmse"]
    model = load_model("gmm2d")
    x_T = initial_noise(model, 0, 300, torch.float32)
    from solvers import Denoiser, get_solver
    solver = get_solver("ddim")
    plan = solver.plan(model.schedule, 6)
    x, grid = solver.sample(Denoiser(model, budget=6), x_T, plan), plan.grid
    ref = reference_solution(model, x_T[:40], None, 1.0, grid[-1], 1e-6, None, "t")
    assert got == pytest.approx(traj_rmse(x[:40], ref), rel=1e-9)
    assert got != pytest.approx(traj_rmse(x, reference_solution(model, x_T, None, 1.0, grid[-1], 1e-6, None, "t")),
                                rel=1e-6)
