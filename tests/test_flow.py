"""Flow matching: the rectified-flow schedule, the flow velocity, flow-euler / flow-heun, the `shift` grid option,
the flow grids, and parity with diffusers' flow schedulers (float64, the exact gmm2d flow oracle).

Parity recipe (as tests/test_core_diffusers.py, for the flow schedulers; docs/solvers.md#flow-matching):
* FlowMatchEuler/Heun's step() casts the sample to float32 and DPM-Solver's too: the scheduler module's `torch`
  is seen through a proxy whose float32 is float64. UniPC keeps the sample's dtype.
* Every sigma table is float32: after set_timesteps our float64 grid replaces it (in the scheduler's own layout,
  Heun's interleaved), once it is checked to equal the float32 table within 3e-8.
* The oracle is evaluated at the table's sigma (sigmas[step_index]), not at timestep / 1000 (DPM-Solver and UniPC
  truncate their timesteps to integers); both sides start from the same x_T.
"""
import math
import types

import numpy as np
import pytest
import torch

import models
import solvers
from bench.cli import main
from solvers import Denoiser, PlanError, SpecError, get_solver, make_grid
from solvers.denoiser import Network
from solvers.schedules import NoiseSchedule, RectifiedFlow, as_t

F64 = torch.float64
TOL = 1e-6


@pytest.fixture(scope="module")
def rf():
    """The exact gmm2d flow model: rectified-flow schedule, velocity output."""
    return models.load_model("gmm2d:schedule=rectified-flow,prediction=flow", dtype=F64)


@pytest.fixture(scope="module")
def xT():
    return torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))


# --- schedule ------------------------------------------------------------------------------------------------
def test_schedule_closed_forms():
    s = RectifiedFlow()
    t = torch.tensor([1e-3, 0.1, 0.3, 0.5, 0.77, 0.999], dtype=F64)
    assert torch.equal(s.alpha(t), 1 - t) and torch.equal(s.sigma(t), t)
    assert torch.allclose(s.lambda_(t), torch.log((1 - t) / t), rtol=0, atol=1e-14)
    assert torch.allclose(s.t_of_lambda(s.lambda_(t)), t, rtol=1e-15, atol=0)
    assert torch.allclose(s.lambda_(1 - t), -s.lambda_(t), rtol=0, atol=1e-12)   # odd about t = 1/2
    assert torch.allclose(s.t_of_log_alpha(s.log_alpha(t)), t, rtol=1e-14, atol=0)
    lam, h = s.lambda_(t), 1e-6
    fd = (s.log_alpha(s.t_of_lambda(lam + h)) - s.log_alpha(s.t_of_lambda(lam - h))) / (2 * h)
    assert torch.allclose(s.dlog_alpha_dlambda(lam), fd, rtol=1e-7, atol=0)
    assert (s.t_min, s.T) == (1e-3, 1 - 1e-3) and float(s.lambda_(s.T)) == pytest.approx(-6.906755, abs=1e-6)
    assert float(s.lambda_(1.0)) == -math.inf and float(s.lambda_(0.0)) == math.inf
    assert torch.equal(s.model_time(torch.tensor([0.25])), torch.tensor([250.0], dtype=F64))
    assert solvers.SCHEDULES["rectified-flow"] is RectifiedFlow and s.kind == "rf"


# --- the flow velocity in the Denoiser -----------------------------------------------------------------------
def test_every_prediction_type_gives_the_same_x0_and_eps(xT):
    """The oracle as x0, eps, v (alpha eps - sigma x0) and flow (eps - x0) output: one x0 and eps."""
    t = torch.tensor(0.37, dtype=F64)
    preds = {p: Denoiser(models.load_model(f"gmm2d:schedule=rectified-flow,prediction={p}", dtype=F64)).predict(xT, t)
             for p in ("x0", "eps", "v", "flow")}
    for p, pred in preds.items():
        assert torch.allclose(pred.x0, preds["x0"].x0, rtol=0, atol=1e-13), p
        assert torch.allclose(pred.eps, preds["x0"].eps, rtol=0, atol=1e-13), p
        assert torch.allclose(pred.velocity, pred.eps - pred.x0, rtol=0, atol=0), p


def test_flow_output_is_finite_at_pure_noise(rf, xT):
    """At t = 1 (alpha = 0) x0 = x - v and eps = x, with no division by alpha; the oracle's x0 is the data mean."""
    pred = Denoiser(rf).predict(xT, torch.tensor(1.0, dtype=F64))
    assert torch.isfinite(pred.x0).all() and torch.equal(pred.eps, xT)
    assert torch.allclose(pred.x0, rf.reference.mean.expand_as(xT), rtol=0, atol=1e-14)
    x0_model = Denoiser(models.load_model("gmm2d:schedule=rectified-flow", dtype=F64)).predict(xT, 1.0)
    assert torch.isfinite(x0_model.x0).all()       # an x0-model's x0 is handed over too


class ToyFlow(Network):
    """A class-conditional flow model: v = x * (1 + y) - t (labels shift it), to test guidance on v."""
    schedule = RectifiedFlow()
    prediction = "flow"
    num_classes = 3

    def forward(self, x, t, y=None):
        return x * (1.0 + y.to(x.dtype))[:, None] - t[:, None]


class ToyEps(ToyFlow):
    """The same model written as an eps prediction: eps = x + (1 - t) v."""
    prediction = "eps"

    def forward(self, x, t, y=None):
        return x + (1 - t)[:, None] * super().forward(x, t, y)


def test_guidance_on_the_velocity_is_guidance_on_eps(xT):
    y, t = torch.arange(64) % 3, torch.tensor(0.4, dtype=F64)
    v = Denoiser(ToyFlow(), y=y, guidance=3.0).predict(xT, t)
    e = Denoiser(ToyEps(), y=y, guidance=3.0).predict(xT, t)
    assert torch.allclose(v.eps, e.eps, rtol=0, atol=1e-13) and torch.allclose(v.x0, e.x0, rtol=0, atol=1e-13)
    d = Denoiser(ToyFlow(), y=y, guidance=3.0)
    d.predict(xT, t)
    assert d.nfe == 1                               # a guided evaluation is one NFE


def test_flow_prediction_needs_a_rectified_flow():
    class VPFlow(Network):
        name, schedule, prediction = "vp-flow", solvers.VPLinear(), "flow"
    with pytest.raises(ValueError, match="predicts a flow velocity .* needs a rectified-flow schedule; its "
                                         "schedule is vp-linear"):
        Denoiser(VPFlow())
    with pytest.raises(SpecError, match="prediction=flow .* needs schedule=rectified-flow, not vp-discrete"):
        models.load_model("gmm2d:prediction=flow")


def test_oracles_accept_the_flow_schedule():
    """digits-oracle's posterior mean under alpha = 1 - t, sigma = t: at t = 1 the class mean of the images."""
    m = models.load_model("digits-oracle:schedule=rectified-flow")
    assert m.schedule.kind == "rf"
    x, y = torch.randn(4, 1, 8, 8, dtype=F64), torch.tensor([0, 3, 7, 10])
    x0 = Denoiser(m, y=y).predict(x, torch.tensor(1.0, dtype=F64)).x0
    for row, c in zip(x0, y.tolist()):
        images = m.images if c == 10 else m.images[m.labels == c]
        assert torch.allclose(row.flatten(), images.mean(0), rtol=0, atol=1e-12)
    with pytest.raises(SpecError, match="schedule=flow .* choose one of: .*rectified-flow"):
        models.model_options("digits-oracle:schedule=flow")


# --- grids and the shift -------------------------------------------------------------------------------------
def test_shift_is_a_log_snr_translation():
    s = RectifiedFlow()
    for name in ("time_uniform", "logSNR", "karras", "time_quadratic", "flow_linspace"):
        base, shifted = make_grid(name, s, 7), make_grid(name, s, 7, shift=3.0)
        keep = base > 0
        assert torch.allclose(s.lambda_(shifted[keep]), s.lambda_(base[keep]) - math.log(3.0), rtol=0, atol=1e-12)
        assert torch.equal(shifted[~keep], base[~keep])     # the data point stays
    # on karras that is both sigma~ endpoints times 3, rho-spacing kept
    sg = torch.exp(-s.lambda_(make_grid("karras", s, 6, shift=3.0)))
    s_max, s_min = 3 * s.T / (1 - s.T), 3 * s.t_min / (1 - s.t_min)
    ramp = torch.linspace(0, 1, 7, dtype=F64)
    want = (s_max ** (1 / 7) + ramp * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    assert torch.allclose(sg, want, rtol=1e-12, atol=0)
    # on a VP schedule: the same translation (shift < 1 moves the grid towards the data)
    vp = solvers.VPLinear()
    base, shifted = make_grid("logSNR", vp, 5), make_grid("logSNR", vp, 5, shift=0.5)
    assert torch.allclose(vp.lambda_(shifted), vp.lambda_(base) - math.log(0.5), rtol=0, atol=1e-9)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 25, 50])
def test_flow_grids_are_diffusers_sigmas(n, shift):
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    s = RectifiedFlow()
    pairs = [(FlowMatchEulerDiscreteScheduler(shift=shift), "flow_euler"),
             (DPMSolverMultistepScheduler(**flow_config(shift)), "flow_linspace"),
             (UniPCMultistepScheduler(**flow_config(shift)), "flow_unipc")]
    for sch, grid in pairs:
        sch.set_timesteps(n)
        ours = make_grid(grid, s, n, shift=shift)
        assert ours.shape == sch.sigmas.shape and float((ours - sch.sigmas.to(F64)).abs().max()) <= 3e-8, grid


# --- parity with diffusers -----------------------------------------------------------------------------------
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install nfebench[test])")
from diffusers import (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,  # noqa: E402
                       FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler)
import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_module  # noqa: E402
import diffusers.schedulers.scheduling_flow_match_euler_discrete as euler_module  # noqa: E402
import diffusers.schedulers.scheduling_flow_match_heun_discrete as heun_module  # noqa: E402

NS = [1, 2, 3, 5, 10, 16]       # 14/15/16 straddle DPM-Solver's lower_order_final rule (< 15)
SHIFTS = [1.0, 3.0]
PARITY: dict = {}               # the measured max abs differences, printed with -s


class _Float64Torch(types.ModuleType):
    """`torch` as a scheduler module sees it in these tests: float32 means float64."""
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.fixture
def no_downcast(monkeypatch):
    for module in (dpm_module, euler_module, heun_module):
        monkeypatch.setattr(module, "torch", _Float64Torch("torch"))


def flow_config(shift):
    return dict(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")


def run_diffusers(sch, model, x_T, n, layout):
    """diffusers' loop on its own timesteps, on our float64 sigmas (`layout` of the grid), the oracle evaluated at
    sigmas[step_index]; returns the sample and the number of model calls."""
    sch.set_timesteps(n)
    assert float((layout - sch.sigmas.to(F64)).abs().max()) <= 3e-8
    sch.sigmas = layout.clone()
    x, calls = x_T.clone(), 0
    for step in sch.timesteps:
        t = sch.sigmas[sch.step_index or 0].expand(x.shape[0])
        x = sch.step(model.forward(x, t), step, x).prev_sample
        calls += 1
    return x, calls


def ours(spec, model, x_T, grid, nfe):
    den = Denoiser(model, budget=nfe)
    x = get_solver(spec).sample_on(den, x_T, grid)
    assert den.nfe == nfe
    return x


def record(key, diff):
    PARITY[key] = diff
    assert diff <= TOL, (key, diff)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", NS)
def test_flow_euler_matches_diffusers(rf, xT, no_downcast, n, shift):
    grid = make_grid("flow_euler", rf.schedule, n, shift=shift)
    ref, calls = run_diffusers(FlowMatchEulerDiscreteScheduler(shift=shift), rf, xT, n, grid)
    assert calls == n
    # the default flow-euler plan is this grid
    assert torch.equal(get_solver(f"flow-euler:shift={shift}").plan(rf.schedule, n).grid, grid)
    record(("flow-euler", n, shift), float((ours(f"flow-euler:shift={shift}", rf, xT, grid, n) - ref).abs().max()))


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", NS)
def test_flow_heun_matches_diffusers(rf, xT, no_downcast, n, shift):
    grid = make_grid("flow_euler", rf.schedule, n, shift=shift)
    inner = grid[1:-1].repeat_interleave(2)           # Heun's table: s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0
    layout = torch.cat([grid[:1], inner, grid[-1:]])
    ref, calls = run_diffusers(FlowMatchHeunDiscreteScheduler(shift=shift), rf, xT, n, layout)
    assert calls == 2 * n - 1
    plan = get_solver(f"flow-heun:shift={shift}").plan(rf.schedule, 2 * n - 1)
    assert torch.equal(plan.grid, grid) and plan.nfe == 2 * n - 1    # the budget 2N - 1 plans diffusers' N steps
    record(("flow-heun", n, shift), float((ours(f"flow-heun:shift={shift}", rf, xT, grid, 2 * n - 1) - ref)
                                          .abs().max()))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", NS)
def test_dpmpp_multistep_matches_diffusers_flow_sigmas(rf, xT, no_downcast, order, n, shift):
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=order, **flow_config(shift))
    assert sch.config.lower_order_final and sch.config.final_sigmas_type == "zero"
    grid = make_grid("flow_linspace", rf.schedule, n, shift=shift)
    ref, _ = run_diffusers(sch, rf, xT, n, grid)
    spec = f"dpmpp-{order}m:grid=flow_linspace,shift={shift}"
    assert torch.equal(get_solver(spec).plan(rf.schedule, n).grid, grid)
    record((f"dpmpp-{order}m", n, shift), float((ours(spec, rf, xT, grid, n) - ref).abs().max()))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", NS)
def test_unipc_matches_diffusers_flow_sigmas(rf, xT, order, n, shift):
    sch = UniPCMultistepScheduler(solver_order=order, **flow_config(shift))
    assert sch.config.solver_type == "bh2" and sch.config.lower_order_final
    grid = make_grid("flow_unipc", rf.schedule, n, shift=shift)
    assert float(grid[0]) == pytest.approx(1 - 1e-6, abs=1e-15)
    ref, _ = run_diffusers(sch, rf, xT, n, grid)
    spec = f"unipc:grid=flow_unipc,order={order},shift={shift},variant=bh2"
    assert torch.equal(get_solver(spec).plan(rf.schedule, n).grid, grid)
    record((f"unipc-{order}", n, shift), float((ours(spec, rf, xT, grid, n) - ref).abs().max()))


def test_parity_figures(capsys):
    """Prints the largest difference per method (pytest -s); runs after the parity tests of this module."""
    if not PARITY:
        pytest.skip("no parity test ran")
    worst = {}
    for (method, n, shift), d in PARITY.items():
        worst[method] = max(worst.get(method, 0.0), d)
    with capsys.disabled():
        print("\nflow parity, max abs difference over N in", NS, "and shift", SHIFTS, ":",
              ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) <= TOL


# --- identities ----------------------------------------------------------------------------------------------
def test_flow_euler_is_ddim(rf, xT):
    """x + (t - s) v = (t/s) x + (1 - t/s) x0: DDIM on a rectified flow, also from t = 1."""
    for grid in ("flow_euler", "logSNR"):
        g = make_grid(grid, rf.schedule, 8, shift=2.0)
        a = get_solver("flow-euler").sample_on(Denoiser(rf), xT, g)
        b = get_solver("ddim").sample_on(Denoiser(rf), xT, g)
        assert float((a - b).abs().max()) <= 1e-13, grid


def test_flow_heun_is_not_edm_heun(rf, xT):
    """Heun in t and EDM's Heun in sigma~ = t / (1 - t) are different methods (Heun is not invariant under the
    change of variables): nobody may alias them."""
    g = make_grid("flow_linspace", rf.schedule, 5)
    a = get_solver("flow-heun").sample_on(Denoiser(rf), xT, g)
    b = get_solver("heun").sample_on(Denoiser(rf), xT, g)
    assert float((a - b).abs().max()) > 1e-2


class RescaledVP(NoiseSchedule):
    """The VP schedule with a rectified flow's lambda: alpha = (1 - t)/r, sigma = t/r, r = sqrt((1-t)^2 + t^2)."""
    t_min, T = 1e-3, 1 - 1e-3

    def log_alpha(self, t):
        t = as_t(t)
        return torch.log1p(-t) - 0.5 * torch.log((1 - t) ** 2 + t ** 2)

    def t_of_lambda(self, lam):
        return torch.sigmoid(-as_t(lam))


class RescaledOracle(Network):
    """gmm2d's flow oracle seen through x_vp = x_rf / r: a VP x0-model with the same lambda(t)."""
    schedule, prediction = RescaledVP(), "x0"

    def __init__(self, rf_model):
        self.rf = rf_model

    def forward(self, x, t, y=None):
        r = torch.sqrt((1 - t) ** 2 + t ** 2)[:, None]
        return self.rf.posterior_mean(x * r, t)


@pytest.mark.parametrize("spec", ["dpmpp-2m", "dpmpp-3m", "unipc", "dpm-solver-3", "ddim"])
def test_lambda_solvers_are_invariant_under_the_vp_rescaling(rf, xT, spec):
    """A rectified flow is a VP model up to x -> x / r_t with the same lambda: the exponential integrators give the
    same samples on both (so their orders on the VP oracle carry over)."""
    vp = RescaledOracle(rf)
    g = make_grid("logSNR", rf.schedule, 9)
    r = lambda t: math.sqrt((1 - t) ** 2 + t ** 2)   # noqa: E731
    a = get_solver(spec).sample_on(Denoiser(rf), xT * float(g[0]), g)
    b = get_solver(spec).sample_on(Denoiser(vp), xT * float(g[0]) / r(float(g[0])), g) * r(float(g[-1]))
    assert float((a - b).abs().max()) <= 1e-11


# --- convergence orders on the flow oracle --------------------------------------------------------------------
# As tests/test_core_convergence.py on the VP oracle (same NFE, samples, reference and bands): the median
# per-sample error against a dopri5 solve from the same x_T, logSNR grid from T = 0.999 to t_min = 1e-3.
# Measured here (seed 0): ddim 1.007, flow-euler 1.007, flow-heun 2.057, heun 2.063, dpmpp-2m 1.976,
# dpmpp-3m:d2_weight=exact 3.095, unipc 3.938 (the corrector's extra order, as tests/test_unipc.py asserts on VP).
FLOW_ORDERS = [
    ("ddim:grid=logSNR", 1, 0.15),
    ("flow-euler:grid=logSNR", 1, 0.15),
    ("flow-heun:grid=logSNR", 2, 0.25),
    ("heun:grid=logSNR", 2, 0.25),
    ("dpmpp-2m", 2, 0.25),
    ("dpmpp-3m:d2_weight=exact", 3, 0.35),
    ("unipc", 4, 0.5),
]


@pytest.fixture(scope="module")
def flow_problem(rf):
    from tests.test_core_convergence import N_SAMPLES
    sched = rf.schedule
    x = torch.randn(N_SAMPLES, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(sched.sigma(sched.T))
    ends = make_grid("logSNR", sched, 1)
    ref = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(Denoiser(rf), x, ends)
    loose = get_solver("ode-dopri5:rtol=1e-10,atol=1e-10").sample_on(Denoiser(rf), x, ends)
    return x, ref, float((ref - loose).norm(dim=1).max())


@pytest.mark.slow
@pytest.mark.parametrize("spec,order,band", FLOW_ORDERS, ids=[o[0] for o in FLOW_ORDERS])
def test_convergence_order_on_the_flow_oracle(rf, flow_problem, run_solver, spec, order, band):
    from tests.test_core_convergence import NFES
    x, ref, ref_err = flow_problem
    used, med = [], []
    for nfe in NFES:
        out, n = run_solver(spec, rf, x, nfe)
        used.append(n)
        med.append(float((out - ref).norm(dim=1).median()))
    assert min(med) > 20 * ref_err, f"reference not accurate enough for {spec}: {med} vs {ref_err}"
    slope = -np.polyfit(np.log(used), np.log(med), 1)[0]
    assert abs(slope - order) <= band, f"{spec}: slope {slope:.3f} (errors {med}, NFE {used})"


# --- NFE accounting ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["flow-euler", "flow-heun"])
@pytest.mark.parametrize("grid", ["flow_euler", "time_uniform", "logSNR", "flow_linspace"])
def test_flow_samplers_spend_their_budget_exactly(rf, xT, name, grid):
    solver, xT = get_solver(f"{name}:grid={grid}"), xT[:8]
    for nfe in (1, 2, 3, 4, 5, 6, 7, 10, 13, 20):
        plan = solver.plan(rf.schedule, nfe)
        den = Denoiser(rf, budget=nfe)
        x = solver.sample(den, xT, plan)
        assert den.nfe == plan.nfe == nfe and torch.isfinite(x).all()
        with pytest.raises(solvers.NFEBudgetExceeded):   # never past the budget: one short raises
            solver.sample(Denoiser(rf, budget=nfe - 1), xT, plan)


# --- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,pattern", [
    ("flow-euler:shift=0", r"option shift=0.0 for solver 'flow-euler' not accepted: need shift > 0"),
    ("ddim:shift=-2", r"option shift=-2.0 for solver 'ddim' not accepted: need shift > 0"),
    ("dpmpp-2m:shift=nan", r"option shift=nan for solver 'dpmpp-2m' not accepted: need shift > 0"),
    ("dpmpp-2m:shift=inf", r"option shift=inf for solver 'dpmpp-2m' not accepted: need shift > 0"),
    ("flow-heun:shift=abc", r"option shift=abc for solver 'flow-heun' is not valid: expected float"),
    ("flow-euler:grid=flow", r"option grid=flow for solver 'flow-euler' not accepted; choose one of: .*flow_euler"),
])
def test_bad_options(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)


def test_plans_that_cannot_exist(rf):
    vp = models.load_model("gmm2d", dtype=F64).schedule
    cases = [
        ("flow-euler", vp, "solver 'flow-euler' steps a rectified flow's velocity; this model's schedule is "
                           "vp-discrete"),
        ("flow-heun:grid=logSNR", vp, "solver 'flow-heun' steps a rectified flow's velocity"),
        ("ddim:grid=flow_euler", vp, "grid 'flow_euler' needs a rectified-flow schedule; vp-discrete is not one"),
        ("dpmpp-2m:grid=flow_euler", rf.schedule, "solver 'dpmpp-2m:grid=flow_euler' cannot start at t = 1, where "
                                                  "alpha = 0"),
        ("heun:grid=flow_euler", rf.schedule, "cannot start at t = 1"),
        ("ddim:eta=1.0,grid=flow_euler", rf.schedule, "cannot start at t = 1"),
        ("ddim:shift=3.0", vp, "grid option shift=3 moves the grid's first time to 1.10876, past vp-discrete's T = 1"),
        ("unipc:grid=flow_unipc,shift=1000000.0", rf.schedule, "grid 'flow_unipc' with shift=1e+06 and 6 steps has "
                                                                "repeated or unordered times"),
    ]
    for spec, schedule, needle in cases:
        with pytest.raises(PlanError) as e:
            get_solver(spec).plan(schedule, 6)
        assert needle in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))


def test_cli_refuses_a_flow_sampler_on_a_vp_model(tmp_path, capsys):
    assert main(["run", "--models", "gmm2d", "--solvers", "flow-euler", "--nfe", "4", "--samples", "10",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps a rectified flow's velocity" in err and "vp-discrete" in err


def test_shift_is_part_of_the_spec_only_when_given():
    """shift = 1 is no shift: the canonical spec and the resolved options (a cell's identity) leave it out."""
    assert get_solver("dpmpp-2m:shift=1").spec == "dpmpp-2m" and "shift" not in get_solver("dpmpp-2m").options
    s = get_solver("dpmpp-2m:shift=3")
    assert s.spec == "dpmpp-2m:shift=3.0" and s.options["shift"] == 3.0
    assert get_solver(s.spec).options == s.options
