"""cm-multistep on the embedded models (their x0-prediction as the consistency function): the update written out
by hand, NFE, and the grid rule. Parity with diffusers' CMStochasticIterativeScheduler on a consistency
checkpoint is in tests/test_hub.py."""
import pytest
import torch

import models
from solvers import Denoiser, SpecError, get_solver, make_grid
from solvers.consistency import consistency_grid

F64 = torch.float64


@pytest.mark.parametrize("schedule", ["ve", "vp-linear"])
def test_the_update_written_out(schedule):
    model = models.load_model(f"gmm2d:schedule={schedule}", dtype=F64)
    sched = model.schedule
    solver = get_solver("cm-multistep")
    grid = solver.grid_for(sched, 3)
    torch.testing.assert_close(grid, make_grid("karras", sched, 3))   # no consistency grid on this model
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(sched.sigma(grid[0]))
    d = Denoiser(model, budget=3)
    got = solver.sample(d, x_T, grid, generator=torch.Generator().manual_seed(5))
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
    got = solver.sample(Denoiser(model), x_T, solver.grid_for(model.schedule, 1))
    torch.testing.assert_close(got, Denoiser(model).x0(x_T, model.schedule.T), atol=0, rtol=0)


class _Karras:
    kind, t_min, T, consistency_steps, rho = "ve", 0.002, 80.0, 40, 7.0


def test_consistency_grid_is_diffusers_set_timesteps():
    """Spec 3.3: n = 2 gives indices [20, 0] -> sigma 80, 2.2404; n = 3: 80, 9.7232, 0.4700; then sigma_min."""
    assert [round(float(s), 4) for s in consistency_grid(_Karras, 2)] == [80.0, 2.2404, 0.002]
    assert [round(float(s), 4) for s in consistency_grid(_Karras, 3)] == [80.0, 9.7232, 0.47, 0.002]
    with pytest.raises(SpecError, match="NFE 41 exceeds"):
        consistency_grid(_Karras, 41)
