"""digits-cd: the consistency model distilled from digits: parametrization, VE view, training, sampling."""
import json

import pytest
import torch

from models import load_model
from models.digits_cd import ConsistencyNet, DigitsCD, TeacherVEView, teacher_ve_schedule
from models.weights_store import SHA_FILE, WEIGHTS_DIR, WeightsError, sha256_of
from solvers import Denoiser, get_solver

F64 = torch.float64


@pytest.fixture(scope="module")
def teacher():
    return load_model("digits")


@pytest.fixture(scope="module")
def model():
    return load_model("digits-cd")


def test_interface(model):
    s = model.schedule
    assert model.prediction == "x0" and model.num_classes == 10 and not model.guidable
    assert s.kind == "ve" and (s.consistency_steps, s.rho) == (18, 7.0)
    # the teacher's sigma~ range: sigma~ = sqrt((1 - abar) / abar) at steps 0 and 999
    abar = load_model("digits").schedule.alphas_cumprod
    assert s.t_min == pytest.approx(float(((1 - abar[0]) / abar[0]).sqrt()), rel=1e-9)
    assert s.T == pytest.approx(float(((1 - abar[-1]) / abar[-1]).sqrt()), rel=1e-9)


def test_boundary_condition_is_exact(model):
    """f(x, sigma_min) = x: c_skip = 1 and c_out = 0 there, whatever the network says."""
    x = torch.rand(16, 1, 8, 8) * 1.8 - 0.9
    t = torch.full((16,), model.schedule.t_min, dtype=F64)
    torch.testing.assert_close(model.forward(x, t, torch.arange(16) % 10), x, atol=1e-6, rtol=0)


class _TrueV(torch.nn.Module):
    """Stands in for the network: returns the exact v = alpha eps - sigma_vp x0 of known (x0, eps)."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x, step, y):
        return self.v


def test_v_reading_returns_x0(teacher):
    """With the exact v as network output f is x0 at every sigma (sigma_min = 0: the CM scalings are EDM's), and
    with sigma_min > 0 it is x at sigma_min whatever the network says."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.randn(8, 1, 8, 8, generator=g)
    for sigma in (0.01, 0.3, 2.0, 40.0, 157.0):
        a = 1 / (1 + sigma ** 2) ** 0.5
        net = ConsistencyNet(teacher.schedule, sigma_min=0.0)
        net.eps_net = _TrueV(a * eps - sigma * a * x0)
        f = net(x0 + sigma * eps, torch.full((8,), sigma, dtype=F64), torch.zeros(8, dtype=torch.long))
        torch.testing.assert_close(f, x0, atol=2e-5 * max(1.0, sigma), rtol=0)
    net = ConsistencyNet(teacher.schedule, sigma_min=0.01)
    net.eps_net = _TrueV(torch.randn(8, 1, 8, 8, generator=g))
    x = torch.randn(8, 1, 8, 8, generator=g)
    torch.testing.assert_close(net(x, torch.full((8,), 0.01, dtype=F64), None), x, atol=1e-6, rtol=0)


def test_initialised_net_is_the_teacher_at_low_noise(teacher):
    """Initialised from the teacher, f is the teacher's x0-prediction up to O(sigma^2) (v read where eps was
    trained): checks the sigma -> (step, alpha) map into the teacher's VP time."""
    vp = teacher.schedule
    net = ConsistencyNet(vp, sigma_min=0.0)
    net.eps_net.load_state_dict(teacher.net.state_dict())
    g = torch.Generator().manual_seed(0)
    y = torch.arange(8) % 10
    for sigma in (0.012, 0.03, 0.08):
        t = vp.t_of_lambda(-torch.log(torch.tensor(sigma, dtype=F64)))
        x_vp = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1 + sigma * torch.randn(8, 1, 8, 8, generator=g)
        x0_teacher = Denoiser(teacher, y=y).x0(x_vp, t)
        with torch.no_grad():
            f = net(x_vp / vp.alpha(t).float(), torch.full((8,), sigma, dtype=F64), y)
        err = (f - x0_teacher).abs().max().item()
        assert err < 3 * sigma ** 2 * (1 + x_vp.abs().max().item()) + 1e-5, (sigma, err)


def test_teacher_ve_view_has_the_same_ode_solution(teacher):
    """The VE view's PF-ODE from sigma_max z ends where the VP ODE from sigma_T z ends, divided by alpha."""
    ve = teacher_ve_schedule(teacher.schedule)
    view = TeacherVEView(load_model("digits", dtype=F64), ve)
    vp = view.base.schedule
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.tensor([1, 4, 7, 10])
    ode = get_solver("ode-dopri5:rtol=1e-7,atol=1e-7")
    x_vp = ode.sample_on(Denoiser(view.base, y=y), z, torch.tensor([vp.T, vp.t_min], dtype=F64))
    x_ve = ode.sample_on(Denoiser(view, y=y), z * ve.T, torch.tensor([ve.T, ve.t_min], dtype=F64))
    torch.testing.assert_close(x_ve, x_vp / vp.alpha(vp.t_min), atol=2e-4, rtol=0)


def test_shipped_weights_distil_the_shipped_teacher():
    sums = json.loads((WEIGHTS_DIR / SHA_FILE).read_text())
    path = WEIGHTS_DIR / "digits-cd.safetensors"
    assert sums["digits-cd.safetensors"] == sha256_of(path) and path.stat().st_size < 10 * 2 ** 20
    meta = load_model("digits-cd").meta
    assert meta["teacher_sha256"] == sums["digits.safetensors"], \
        "digits was retrained: run `nfebench train digits-cd` too"


def test_missing_weights_name_the_train_command(tmp_path):
    with pytest.raises(WeightsError, match=r"digits-cd\.safetensors is missing.*nfebench train digits-cd"):
        DigitsCD(str(tmp_path))


def test_training_deterministic_and_recorded(tmp_path):
    from models.training import TRAINERS

    paths = [TRAINERS["digits-cd"](tmp_path / f"run{i}", seed=5, steps=3, batch_size=16, log=None) for i in range(2)]
    assert sha256_of(paths[0]) == sha256_of(paths[1])
    assert json.loads((tmp_path / "run0" / SHA_FILE).read_text())["digits-cd.safetensors"] == sha256_of(paths[0])
    load_model(f"digits-cd:weights={tmp_path / 'run0'}")        # loads as a model


def test_guidance_does_not_apply(model):
    with pytest.raises(ValueError, match="guidance != 1 does not apply"):
        Denoiser(model, y=torch.zeros(2, dtype=torch.long), guidance=2.0)


def test_distillation_beats_its_initialisation(model, teacher):
    """One step, f(x_T, sigma_max), lands closer to the teacher's exact ODE solution from x_T than the
    teacher-initialised, undistilled network does (which is the teacher's denoiser: about the mean image)."""
    init = DigitsCD.__new__(DigitsCD)
    init.schedule, init.clip, init.meta = model.schedule, True, {}
    init.net = ConsistencyNet(teacher.schedule, model.schedule.t_min)
    init.net.eps_net.load_state_dict(teacher.net.state_dict())
    init.net.requires_grad_(False).eval()
    n = 200
    y = torch.arange(n) % 10
    x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * model.schedule.T
    ode = get_solver("dpmpp-3m")
    ref = ode.sample_on(Denoiser(model.ode_model, y=y), x_T.double(), ode.plan(model.schedule, 60)).float()
    cm = get_solver("cm-multistep")
    err = {}
    for name, m in (("distilled", model), ("init", init)):
        d = Denoiser(m, y=y, budget=1)
        out = cm.sample_on(d, x_T, cm.plan(m.schedule, 1))
        assert d.nfe == 1
        err[name] = (out - ref).pow(2).mean().sqrt().item()
    assert err["distilled"] < 0.8 * err["init"], err


def test_cli_runs_and_skips_guidance(tmp_path, capsys):
    from bench.cli import main

    rc = main(["run", "--models", "digits-cd", "--solvers", "cm-multistep", "--nfe", "1,2", "--guidance", "1,3",
               "--samples", "64", "--metrics", "fid,cond_acc", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    out = capsys.readouterr()
    assert "digits-cd is a consistency model (one guidance scale): guidance 3 skipped" in out.out + out.err
    import pandas as pd
    rows = pd.read_csv(tmp_path / "results.csv")
    assert sorted(rows.nfe) == [1, 2] and (rows.nfe_used == rows.nfe).all() and (rows.guidance == 1).all()


def test_readme_table_is_the_committed_results():
    """The digits-cd table of results/README.md: each cell is the 3-seed mean FID of the committed runs (3 significant digits);
    the teacher row names the best of its three solvers at that NFE."""
    import re
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    lines = (root / "results" / "README.md").read_text().splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("| | NFE 1 | NFE 2 | NFE 3 | NFE 4 | NFE 8 | NFE 17 |"))
    nfes = [int(v) for v in re.findall(r"NFE (\d+)", lines[head])]
    cd = pd.read_csv(root / "results" / "digits-cd" / "results.csv").groupby(["solver", "nfe"]).fid.mean()
    teacher = pd.read_csv(root / "results" / "digits-cd-teacher" / "results.csv")
    teacher = teacher[teacher.guidance == 1].groupby(["solver", "nfe"]).fid.mean()
    rows = lines[head + 2:head + 5]
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        label, values = cells[0], cells[1:]
        if label.startswith("`digits-cd`"):
            solver = re.search(r"`(ctm-gamma|cm-multistep)`", label).group(1)
            for nfe, v in zip(nfes, values):
                assert v == f"{cd[(solver, nfe)]:.3g}", (solver, nfe, v)
        else:
            assert label.startswith("`digits`, best of")
            for nfe, v in zip(nfes, values):
                if not v:
                    continue
                value, solver = re.fullmatch(r"([\d.]+) \(([\w-]+)\)", v).groups()
                at = teacher.xs(nfe, level="nfe")
                assert value == f"{at[solver]:.3g}" and at[solver] == at.min(), (nfe, v)
