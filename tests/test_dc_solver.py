"""DC-Solver: Lagrange compensation, identities with its base solvers, the ratio search and its calibration file.

No reference implementation of DC-Solver is a test dependency (it lives in a fork of diffusers), so the checks are
the identities of docs/solvers.md#dc-solver: every ratio 1 gives UniPC and
DPM-Solver++(2M) bit for bit, the 3-point weights for uniform spacing, the compensated value staying in the
history, the NFE unchanged, and the search lowering the error it minimises.

Checked once outside the repository (2026-11-26; not a test: the reference is not a dependency) against the
reference LDM port (wl-zhao/DC-Solver dc_solver.py, its ground-truth lookup replaced by the same exact targets):
4-D Gaussian-mixture oracle, DDPM discrete schedule, UniPC-3 bh1, time_uniform grid, float64: samples with given
ratios agree to 2.8e-15 (M = 5, 8) and the searched ratios to 1.3e-14.
"""
import json

import pytest
import torch

import models
from bench.calibration import CALIBRATION_SEED, calibration_key, exact_states
from bench.cli import main
from bench.reference import reference_solution
from bench.runner import Runner, initial_noise
from bench.spec import RunConfig
from solvers import Denoiser, SpecError, get_solver
from solvers.dc_solver import compensate, lagrange_weights, search_ratios

F64 = torch.float64


@pytest.fixture(scope="module")
def gmm():
    return models.load_model("gmm2d", dtype=F64)


def x_T(model, n=32, seed=0):
    return initial_noise(model, seed, n, F64)


def sample(spec_or_solver, model, xT, nfe):
    solver = get_solver(spec_or_solver) if isinstance(spec_or_solver, str) else spec_or_solver
    d = Denoiser(model, budget=nfe)
    x = solver.sample_on(d, xT, solver.plan(model.schedule, nfe))
    return x, d.nfe


def test_lagrange_weights_for_uniform_spacing():
    taus = [torch.tensor(0.4, dtype=F64), torch.tensor(0.6, dtype=F64), torch.tensor(0.8, dtype=F64)]  # newest first
    t_prime = lambda rho: taus[1] + rho * (taus[0] - taus[1])  # noqa: E731
    w = lagrange_weights(taus, t_prime(1.2))
    assert [round(float(v), 12) for v in w] == [1.32, -0.44, 0.12]   # spec 2.1: rho = 1.2
    assert [float(v) for v in lagrange_weights(taus, t_prime(1.0))] == pytest.approx([1, 0, 0], abs=1e-15)
    q = lambda t: 3 * t ** 2 - 2 * t + 0.5  # noqa: E731  (a quadratic is reproduced exactly)
    tp = t_prime(0.7)
    assert float(sum(wi * q(ti) for wi, ti in zip(lagrange_weights(taus, tp), taus))) == pytest.approx(float(q(tp)))


@pytest.mark.parametrize("base", ["unipc", "unipc:order=2,variant=bh2", "unipc:order=1", "unipc:corrector=false",
                                  "unipc:lower_order_final=false,grid=time_uniform"])
@pytest.mark.parametrize("nfe", [3, 6, 10])
def test_every_ratio_one_is_unipc_bit_for_bit(gmm, base, nfe):
    name, _, opts = base.partition(":")
    dc = "unipc+dc:ratio=1" + ("," + opts if opts else "")
    xT = x_T(gmm)
    a, nfe_a = sample(base, gmm, xT, nfe)
    b, nfe_b = sample(dc, gmm, xT, nfe)
    assert torch.equal(a, b) and nfe_a == nfe_b == nfe


@pytest.mark.parametrize("opts", ["", ",lower_order_final=false", ",grid=trailing"])
@pytest.mark.parametrize("nfe", [3, 5, 10, 20])
def test_every_ratio_one_is_dpmpp_2m(gmm, opts, nfe):
    """UniP-2 bh2 without corrector is DPM-Solver++(2M) (spec 1.6): also across the 15-step lower_order_final rule."""
    xT = x_T(gmm)
    a, _ = sample("dpmpp-2m" + (":" + opts[1:] if opts else ""), gmm, xT, nfe)
    b, used = sample("dpmpp-2m+dc:ratio=1" + opts, gmm, xT, nfe)
    torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)
    assert used == nfe


def test_ratios_act_from_the_third_step(gmm):
    xT, nfe = x_T(gmm), 6
    base = get_solver("unipc+dc")
    const, _ = sample("unipc+dc:ratio=1.2", gmm, xT, nfe)
    given, used = sample(base.with_ratios([1, 1, 1.2, 1.2, 1.2, 1.2]), gmm, xT, nfe)
    assert torch.equal(const, given) and used == nfe
    plain, _ = sample("unipc", gmm, xT, nfe)
    assert not torch.allclose(const, plain)
    # rho_1 and rho_2 have no three history entries to act on: anything but 1 there is refused
    with pytest.raises(SpecError, match="the first 2 compensation ratios must be 1"):
        sample(base.with_ratios([1, 5.0, 1, 1, 1, 1]), gmm, xT, nfe)
    last_only, _ = sample(base.with_ratios([1, 1, 1, 1, 1, 1.3]), gmm, xT, nfe)
    assert not torch.equal(last_only, plain)   # the last ratio acts on the final predictor-only step


def test_compensated_value_stays_in_the_history(gmm):
    """Spec pitfall 3: the compensated M_0 is the next step's M_1 too, not a temporary copy."""
    solver = get_solver("unipc+dc:ratio=1.3")
    xT = x_T(gmm, 8)
    plan = solver.plan(gmm.schedule, 6)
    d = Denoiser(gmm)
    x, hist, ctx = solver.begin(d, xT, plan)
    for i in range(2):
        x, hist = solver.step(d, x, hist, plan, i, ctx)
    assert len(hist.Ms) == 3
    comp = compensate(hist, 1.3)
    assert torch.equal(comp.Ms[:2][0], hist.Ms[0]) and not torch.equal(comp.Ms[-1], hist.Ms[-1])
    _, after = solver.step(d, x, comp, plan, 2, ctx)
    assert torch.equal(after.Ms[-2], comp.Ms[-1]) and len(after.Ms) == 3


def test_missing_or_mismatched_ratios_are_one_clear_error(gmm):
    xT = x_T(gmm, 4)
    with pytest.raises(SpecError, match=r"needs compensation ratios for its 5 steps.*nfebench calibrate.*ratio=1\.1"):
        sample("unipc+dc", gmm, xT, 5)
    with pytest.raises(SpecError, match="given 3 compensation ratios for 5 steps"):
        sample(get_solver("dpmpp-2m+dc").with_ratios([1, 1, 1]), gmm, xT, 5)
    with pytest.raises(SpecError, match="unknown option 'order' for solver 'dpmpp-2m\\+dc'"):
        get_solver("dpmpp-2m+dc:order=3")


def test_exact_states_are_the_reference_solution_at_each_grid_time(gmm):
    xT = x_T(gmm, 16)
    solver = get_solver("unipc+dc")
    grid = solver.plan(gmm.schedule, 5).grid
    states = exact_states(gmm, xT, None, 1.0, grid, rtol=1e-8)
    assert len(states) == 5
    for k in (2, 5):
        ref = reference_solution(gmm, xT, None, 1.0, grid[k], 1e-8, None, "t")
        torch.testing.assert_close(states[k - 1], ref, atol=1e-5, rtol=1e-5)
    # a grid ending at sigma = 0: the last state is the data prediction at t_min, as reference_solution gives
    grid0 = get_solver("unipc+dc:grid=trailing").plan(gmm.schedule, 5).grid
    assert float(gmm.schedule.sigma(grid0[-1])) == 0.0
    last = exact_states(gmm, xT, None, 1.0, grid0, rtol=1e-8)[-1]
    torch.testing.assert_close(last, reference_solution(gmm, xT, None, 1.0, 0.0, 1e-8, None, "t"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["unipc+dc", "dpmpp-2m+dc"])
def test_search_lowers_the_error_it_minimises(gmm, spec):
    solver = get_solver(spec)
    xT = initial_noise(gmm, CALIBRATION_SEED, 10, F64)
    nfe = 6
    plan = solver.plan(gmm.schedule, nfe)
    targets = exact_states(gmm, xT, None, 1.0, plan.grid, rtol=1e-8)
    d = Denoiser(gmm)
    ratios = search_ratios(solver, d, xT, plan, targets, iters=40, lr=0.1)
    assert len(ratios) == nfe and ratios[:2] == [1.0, 1.0] and all(r != 1.0 for r in ratios[2:])
    # cost: the start, then per step `iters` searched evaluations (steps 3..M-1; the last step has none) plus the
    # committed one; the final predictor-only step is searched without any evaluation
    assert d.nfe == 1 + 40 * (nfe - 3) + (nfe - 1)

    def final_err(rs):
        x, used = sample(solver.with_ratios(rs), gmm, xT, nfe)
        assert used == nfe
        return float(torch.mean((x - targets[-1]) ** 2))
    assert final_err(ratios) < 0.8 * final_err([1.0] * nfe)
    assert search_ratios(solver, Denoiser(gmm), xT, plan, targets, iters=0) == [1.0] * nfe


def test_run_calibrates_once_and_reuses_the_file(tmp_path, gmm):
    spec = RunConfig(models=["gmm2d"], solvers=["unipc+dc", "dpmpp-2m+dc:ratio=1.1"], nfe=[4, 5], samples=64,
                   metrics=["traj_rmse"], dtype="float64")
    logs = []
    out = Runner(spec, tmp_path / "a", log=logs.append).run()
    assert not out["failed"]
    cal = json.loads((tmp_path / "a" / "calibration.json").read_text())
    assert set(cal) == {calibration_key("gmm2d", "unipc+dc", n, 1.0, "float64") for n in (4, 5)}  # ratio= needs none
    entry = cal[calibration_key("gmm2d", "unipc+dc", 5, 1.0, "float64")]
    assert len(entry["ratios"]) == 5 and entry["noises"] == 10 and entry["search_nfe"] > 5
    assert sum("calibrating" in m for m in logs) == 2
    # another run reading that file searches nothing and samples the same
    spec.calibration = str(tmp_path / "a" / "calibration.json")
    logs2 = []
    out2 = Runner(spec, tmp_path / "b", log=logs2.append).run()
    assert not any("calibrating" in m for m in logs2)
    a, b = out["results"], out2["results"]
    assert list(a["traj_rmse"]) == list(b["traj_rmse"])


def test_calibrate_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cal.json"
    rc = main(["calibrate", "--models", "gmm2d", "--solvers", "ddim,dpmpp-2m+dc", "--nfe", "4",
               "--dtype", "float64", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| gmm2d | dpmpp-2m+dc | 4 | 1 | 1.000, 1.000," in text
    assert list(json.loads(out.read_text())) == [calibration_key("gmm2d", "dpmpp-2m+dc", 4, 1.0, "float64")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "cal.json.lock"]   # no run directory
    rc = main(["calibrate", "--models", "gmm2d", "--solvers", "ddim,unipc+dc:ratio=1.1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("nfebench: error: no solver to calibrate in ddim, unipc+dc:ratio=1.1")
    assert len(err.splitlines()) == 1


def test_guard_falls_back_to_the_base_only_when_the_search_did_not_help():
    from bench.calibration import guarded_ratios
    helped = {"ratios": [1.0, 1.0, 1.3], "final_mse_ratio_1": 2e-3, "final_mse_calibrated": 1e-3}
    hurt = {"ratios": [1.0, 1.0, 1.3], "final_mse_ratio_1": 1e-3, "final_mse_calibrated": 2e-3}
    assert guarded_ratios(helped, True) == guarded_ratios(helped, False) == [1.0, 1.0, 1.3]
    assert guarded_ratios(hurt, True) == [1.0, 1.0, 1.0] and guarded_ratios(hurt, False) == [1.0, 1.0, 1.3]
    assert get_solver("unipc+dc:order=2,guard=true").calibration_spec == "unipc+dc:order=2"
    with pytest.raises(SpecError, match="guard= applies to calibrated ratios"):
        get_solver("dpmpp-2m+dc:ratio=1.1,guard=true")


def test_guarded_solver_shares_the_search_and_samples_as_the_base_when_it_hurt(tmp_path, gmm):
    """One search serves both; where it raised its own final error the guarded cell equals dpmpp-2m exactly."""
    spec = RunConfig(models=["gmm2d"], solvers=["dpmpp-2m+dc", "dpmpp-2m+dc:guard=true", "dpmpp-2m"],
                   nfe=[5, 20], samples=64, metrics=["traj_rmse"], dtype="float64")
    logs = []
    out = Runner(spec, tmp_path / "a", log=logs.append).run()
    assert not out["failed"] and sum("calibrating" in m for m in logs) == 2
    cal = json.loads((tmp_path / "a" / "calibration.json").read_text())
    res = out["results"].set_index(["solver", "nfe"])["traj_rmse"]
    helped = {}
    for n in (5, 20):
        e = cal[calibration_key("gmm2d", "dpmpp-2m+dc", n, 1.0, "float64")]
        helped[n] = e["final_mse_calibrated"] < e["final_mse_ratio_1"]
        same_as = "dpmpp-2m+dc" if helped[n] else "dpmpp-2m"
        assert res[("dpmpp-2m+dc:guard=true", n)] == res[(same_as, n)]
    # both branches are exercised (seen: NFE 5 final MSE 0.178 -> 0.093, NFE 20 4.8e-4 -> 6.0e-4)
    assert helped == {5: True, 20: False}
