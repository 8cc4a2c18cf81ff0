"""cm-multistep on the embedded models (their x0-prediction as the consistency function): the update written out
by hand, NFE, and the grid rule. Parity with diffusers' CMStochasticIterativeScheduler on a consistency
checkpoint is in tests/test_hub.py."""
import pytest
import torch

import models
from solvers import Denoiser, FixedNFE, SpecError, get_solver, make_grid
from solvers.consistency import consistency_grid

F64 = torch.float64


@pytest.mark.parametrize("schedule", ["ve", "vp-linear"])
def test_the_update_written_out(schedule):
    model = models.load_model(f"gmm2d:schedule={schedule}", dtype=F64)
    sched = model.schedule
    solver = get_solver("cm-multistep")
    grid = solver.plan(sched, 3).grid
    torch.testing.assert_close(grid, make_grid("karras", sched, 3))   # no consistency grid on this model
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(sched.sigma(grid[0]))
    d = Denoiser(model, budget=3)
    got = solver.sample_on(d, x_T, grid, generator=torch.Generator().manual_seed(5))
    assert d.nfe == 3
    g, x, ref = torch.Generator().manual_seed(5), x_T, Denoiser(model)
    for k in range(3):
        x0 = ref.x0(x, grid[k])
        if k == 2:
            break
        z = torch.randn(x.shape, generator=g, dtype=F64)
        t = grid[k + 1]
        if schedule == "ve":
            x = x0 + torch.sqrt(t ** 2 - sched.t_min ** 2) * z
        else:
            x = sched.alpha(t) * x0 + sched.sigma(t) * z
    torch.testing.assert_close(got, x0, atol=0, rtol=0)


def test_one_step_is_the_consistency_function_at_T():
    model = models.load_model("gmm2d:schedule=ve", dtype=F64)
    x_T = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * 80
    solver = get_solver("cm-multistep")
    got = solver.sample_on(Denoiser(model), x_T, solver.plan(model.schedule, 1))
    torch.testing.assert_close(got, Denoiser(model).x0(x_T, model.schedule.T), atol=0, rtol=0)


class _Karras:
    kind, t_min, T, consistency_steps, rho = "ve", 0.002, 80.0, 40, 7.0


def test_consistency_grid_is_diffusers_set_timesteps():
    """Spec 3.3: n = 2 gives indices [20, 0] -> sigma 80, 2.2404; n = 3: 80, 9.7232, 0.4700; then sigma_min."""
    assert [round(float(s), 4) for s in consistency_grid(_Karras, 2)] == [80.0, 2.2404, 0.002]
    assert [round(float(s), 4) for s in consistency_grid(_Karras, 3)] == [80.0, 9.7232, 0.47, 0.002]
    with pytest.raises(SpecError, match="NFE 41 exceeds"):
        consistency_grid(_Karras, 41)


@pytest.mark.parametrize("ts,n_idx,mid", [("0/22/39", 40, 1.3824), ("0/106/200", 201, 1.9128),
                                          ("0/17/39", 40, 4.3656), ("0/11/17", 18, 0.5853)])
def test_tuned_index_lists_give_the_published_sigmas(ts, n_idx, mid):
    """Spec 3.2's table: the launch scripts' index lists and the sigma each reaches after the first step."""
    solver = get_solver(f"cm-multistep:ts={ts},N={n_idx}")
    grid = solver.plan(_Karras, 2).grid
    assert [round(float(s), 4) for s in grid] == [80.0, mid, 0.002]
    with pytest.raises(FixedNFE) as e:   # an index list fixes the NFE: other budgets have no plan
        solver.plan(_Karras, 3)
    assert e.value.nfe == 2


def test_index_list_errors():
    with pytest.raises(SpecError, match="not an increasing '/'-separated index list from 0 to 39"):
        get_solver("cm-multistep:ts=0/22/38").plan(_Karras, 2)
    with pytest.raises(SpecError, match="give N= too"):
        get_solver("cm-multistep:ts=0/22/39").plan(models.load_model("gmm2d:schedule=ve").schedule, 2)
    with pytest.raises(SpecError, match="spends exactly 2 NFE; asked for NFE 3"):
        get_solver("cm-multistep:ts=0/22/39").plan(_Karras, 3)
    with pytest.raises(SpecError, match="give ts= or grid=, not both"):
        get_solver("cm-multistep:ts=0/39,grid=karras")
    with pytest.raises(SpecError, match="give ts= too"):
        get_solver("cm-multistep:N=40")


def test_runner_skips_the_nfe_an_index_list_does_not_spend(tmp_path, capsys):
    import pandas as pd
    from bench.cli import main
    out = tmp_path / "run"
    assert main(["run", "--models", "gmm2d:schedule=ve", "--solvers", "cm-multistep:ts=0/22/39,N=40,ddim",
                 "--nfe", "2,3", "--samples", "64", "--out", str(out), "-q", "--no-plots"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert sorted(zip(df.solver, df.nfe)) == [("cm-multistep:N=40,ts=0/22/39", 2), ("ddim", 2), ("ddim", 3)]
    rc = main(["run", "--models", "gmm2d:schedule=ve", "--solvers", "cm-multistep:ts=0/22/39,N=40",
               "--nfe", "3", "--out", str(tmp_path / "r2"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].endswith("spends exactly 2 NFE; add 2 to --nfe")
