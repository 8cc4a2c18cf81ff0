"""The CUDA path gives the CPU's results: every solver, the embedded models and a whole run.

Marked `cuda`: skipped where torch sees no CUDA device (CI). Run on a GPU machine with
`python -m pytest -m cuda`. The runner draws x_T and stochastic solvers' noise on the CPU, so one seed means
the same samples on any device; what remains is float rounding (float64 here, except the float32 digits net).
"""
import json
import math

import pandas as pd
import pytest
import torch

from bench.runner import Runner
from bench.spec import RunConfig
from models import load_model
from solvers import Denoiser, get_solver, list_solvers

pytestmark = pytest.mark.cuda
F64 = torch.float64
NFE = 16  # at or above every registered solver's minimum (f-pndm: 13)
STOCHASTIC = ["ddim:eta=1"]


def _sample(spec, model, x_T, y=None, guidance=1.0, seed=0):
    solver = get_solver(spec)
    if solver.needs_calibration:
        solver.ratio = 1.1   # the harness gives DC solvers calibrated ratios
    d = Denoiser(model, y=y, guidance=guidance, budget=None if solver.adaptive else NFE)
    gen = torch.Generator().manual_seed(seed)  # on the CPU, as the runner's
    with torch.no_grad():
        x = solver.sample_on(d, x_T, solver.plan(model.schedule, NFE), generator=gen)
    return x, d.nfe


@pytest.mark.parametrize("spec", sorted(list_solvers()) + STOCHASTIC)
def test_every_solver_gives_the_cpu_result(spec):
    cpu = load_model("gmm2d", dtype=F64)
    gpu = load_model("gmm2d", device="cuda", dtype=F64)
    x_T = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 80.0
    x_cpu, nfe_cpu = _sample(spec, cpu, x_T)
    x_gpu, nfe_gpu = _sample(spec, gpu, x_T.cuda())
    assert x_gpu.device.type == "cuda" and x_gpu.dtype == F64
    assert nfe_gpu == nfe_cpu
    # fixed grids: rounding only. An adaptive solver's answer is defined to its own tolerance (dopri5 rtol 1e-6:
    # seen 1.8e-6 relative on an H200, the step controller amplifying rounding), so 10x that.
    solver = get_solver(spec)
    tol = 10 * solver.rtol if solver.adaptive else 1e-7
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=tol, rtol=tol)


def test_embedded_models_give_the_cpu_outputs():
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0.05, 0.95, 32, dtype=F64)
    y = torch.arange(32) % 10
    for name, dtype, tol in (("digits", torch.float32, 1e-4), ("digits-oracle", F64, 1e-9)):
        cpu, gpu = load_model(name, dtype=dtype), load_model(name, device="cuda", dtype=dtype)
        xd = x.to(dtype)
        for guidance in (1.0, 3.0):
            a = Denoiser(cpu, y=y, guidance=guidance).predict(xd, t).eps
            b = Denoiser(gpu, y=y.cuda(), guidance=guidance).predict(xd.cuda(), t).eps
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a, atol=tol, rtol=tol, msg=f"{name} guidance {guidance}")


def test_a_run_on_cuda_gives_the_cpu_table(tmp_path):
    common = dict(models=["gmm2d", "digits", "digits-oracle"],
                  solvers=["ddim", "ddim:eta=1", "dpmpp-2m", "unipc", "heun", "ddim+ts", "plms+hb"],
                  nfe=[10], guidance=[1.0, 3.0], samples=256, metrics=["fid", "kid", "traj_rmse", "cond_acc"],
                  reference_samples=32, kid_subsets=10)
    rows = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / dev
        summary = Runner(RunConfig(device=dev, **common), out, log=lambda m: None).run()
        assert not summary["failed"], summary["failed"]
        rows[dev] = pd.read_csv(out / "results.csv").set_index(["model", "solver", "guidance"]).sort_index()
    meta = json.loads((tmp_path / "cuda" / "run.json").read_text())
    assert meta["device"] == torch.cuda.get_device_name(0)
    cpu, gpu = rows["cpu"], rows["cuda"]
    assert list(gpu.index) == list(cpu.index) and len(cpu) == 7 * (1 + 2 + 2)  # gmm2d: guidance 1 only
    assert (gpu["nfe_used"] == cpu["nfe_used"]).all() and (gpu["diverged_frac"] == 0).all()
    for metric in ("fid", "kid", "traj_rmse", "cond_acc"):
        a, b = cpu[metric].to_numpy(), gpu[metric].to_numpy()
        assert (pd.isna(a) == pd.isna(b)).all(), metric
        ok = ~pd.isna(a)
        for key, u, v in zip(cpu.index[ok], a[ok], b[ok]):
            # float32 digits samples differ by rounding only: metrics agree far inside any reported digit
            assert math.isclose(u, v, rel_tol=1e-3, abs_tol=1e-4), (metric, key, u, v)
