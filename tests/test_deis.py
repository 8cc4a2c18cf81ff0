"""DEIS (solvers/deis.py): parity with diffusers' DEISMultistepScheduler (variant=logrho) and diff-sampler's
deis_sampler (variant=tab, quadrature=reference), identities, NFE and convergence orders (docs/solvers.md#deis).

diffusers side as in tests/test_core_diffusers.py: the scheduler's alphas_cumprod replaced by a float64 copy
that our VPDiscrete is built from, the model called at t_of_step(n) for the integer timestep n. DEIS keeps its
sigmas in float32: after set_timesteps they are recomputed in float64 from the same table (its formula at the
integer timesteps, then sigma~ at training step 0, where diffusers' DEIS stops). Its step() does not cast the
sample, so nothing else needs patching.
"""
import numpy as np
import pytest
import torch

import solvers
import solvers.deis  # noqa: F401  (registers `deis`)
from solvers import Denoiser, get_solver, make_grid
from solvers.deis import tab_exact, tab_reference
from solvers.plan import PlanError
from tests.test_stochastic_samplers import _diff_sampler, k_model, setting

# diffusers and diff-sampler call numpy on torch tensors; diffusers deprecates algorithm_type='dpmsolver'
pytestmark = [pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:`algorithm_types dpmsolver:FutureWarning")]
F64 = torch.float64
NS = [1, 2, 3, 5, 8, 10, 14, 15, 16, 20, 25]   # 14/15/16 straddle diffusers' lower_order_final rule (< 15)
TOL = 1e-10   # relative to max(1, |reference|)


def rel_err(ours, ref):
    return float((ours - ref).abs().max()) / max(1.0, float(ref.abs().max()))


# --- diffusers DEISMultistepScheduler (variant=logrho) ---------------------------------------------------------

@pytest.fixture(scope="module")
def diffusers_deis():
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install nfebench[test])")
    from diffusers import DEISMultistepScheduler, DPMSolverMultistepScheduler
    import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_module
    return DEISMultistepScheduler, DPMSolverMultistepScheduler, dpm_module


def float64_tables(scheduler):
    from tests.test_core_diffusers import common_tables
    return common_tables(scheduler)


def run_scheduler(scheduler, model, x_T, n):
    """The diffusers loop with the sigma table recomputed in float64 (N timesteps, then sigma~ at step 0)."""
    scheduler.set_timesteps(n)
    ac, ts = scheduler.alphas_cumprod, scheduler.timesteps
    scheduler.sigmas = torch.cat([((1 - ac[ts]) / ac[ts]).sqrt(), ((1 - ac[:1]) / ac[:1]).sqrt()])
    x, calls = x_T.clone(), 0
    for step in ts:
        t = model.schedule.t_of_step(int(step)).expand(x.shape[0])
        calls += 1
        x = scheduler.step(model.forward(x, t), step, x).prev_sample
    return x, calls


def diffusers_grid(model, scheduler, n):
    """diffusers' linspace timesteps, ending at training step 0 (not at the data point)."""
    grid = make_grid("linspace", model.schedule, n)[:-1]
    assert torch.equal(grid, model.schedule.t_of_step(scheduler.timesteps.to(F64)))
    return torch.cat([grid, model.schedule.t_of_step(torch.zeros(1, dtype=F64))])


@pytest.fixture(scope="module")
def xT():
    return torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("lower_order_final", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n", NS)
def test_logrho_matches_diffusers(diffusers_deis, xT, order, n, lower_order_final):
    DEISMultistepScheduler = diffusers_deis[0]
    sch = DEISMultistepScheduler(solver_order=order, lower_order_final=lower_order_final)
    assert sch.config.algorithm_type == "deis" and sch.config.solver_type == "logrho"
    model = float64_tables(sch)
    ref, calls = run_scheduler(sch, model, xT, n)
    grid = diffusers_grid(model, sch, n)
    spec = f"deis:variant=logrho,order={order}" + ("" if lower_order_final else ",lower_order_final=false")
    den = Denoiser(model, budget=n)
    ours = get_solver(spec).sample_on(den, xT, grid)
    assert den.nfe == calls == n
    assert rel_err(ours, ref) <= TOL


@pytest.mark.parametrize("n", [3, 10, 14, 15, 20])
def test_logrho_order_2_is_dpm_solver_2m_heun(diffusers_deis, xT, monkeypatch, n):
    """diffusers' DEIS order 2 is DPM-Solver (noise prediction) 2M with solver_type='heun' (the registry has
    no noise-prediction 2M): against diffusers' DPMSolverMultistepScheduler stopping at the same sigma~, its
    float32 downcast of the sample turned off as in tests/test_core_diffusers.py."""
    from tests.test_core_diffusers import _Float64Torch
    _, DPMSolverMultistepScheduler, dpm_module = diffusers_deis
    monkeypatch.setattr(dpm_module, "torch", _Float64Torch("torch"))
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver", solver_order=2, solver_type="heun",
                                      final_sigmas_type="sigma_min")
    model = float64_tables(sch)
    ref, _ = run_scheduler(sch, model, xT, n)
    ours = get_solver("deis:variant=logrho,order=2").sample_on(Denoiser(model), xT, diffusers_grid(model, sch, n))
    assert rel_err(ours, ref) <= TOL


# --- diff-sampler deis_sampler + get_deis_coeff_list('tab') (variant=tab, quadrature=reference) -------------------

def diff_sampler_run(ds, model, grid, x_T, order):
    """diff-sampler's deis_sampler with get_deis_coeff_list(..., deis_mode='tab') on our sigma~ grid (its net
    gets x~ and sigma~); returns x~ at the last level and its evaluation count."""
    sigmas = model.schedule.sigma(grid) / model.schedule.alpha(grid)
    D, calls = k_model(model), []

    def net(x, t, class_labels=None):
        calls.append(1)
        return D(x, t.reshape(1))
    coeffs = ds.get_deis_coeff_list(sigmas, order, deis_mode="tab")
    x0 = x_T / model.schedule.alpha(grid[0])
    ref = ds.deis_sampler(net, x0 / sigmas[0], num_steps=len(sigmas), t_steps=sigmas, max_order=order,
                          coeff_list=coeffs)
    return ref, len(calls)


@pytest.mark.parametrize("order", [2, 3, 4])   # its max_order=1 fails (an empty history list); see order 1 = ddim
@pytest.mark.parametrize("grid_name", ["karras", "time_quadratic"])
@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
def test_tab_reference_is_diff_samplers_rule(gmm, order, grid_name, schedule, monkeypatch):
    """The parity proper. diff-sampler evaluates its quadrature in float32 (torch.linspace's default dtype) and
    one constant's term in float32 (reference_constants); with torch's default dtype float64 it runs its rule in
    float64 throughout, and with the same float64 constants on our side the two agree to rounding: <= 3e-12
    relative, except 1.2e-9 on VE time_quadratic order 4 (its integrand's 1 - abar near t = 1e-3 loses ~5
    digits, and the order-4 extrapolation over large steps amplifies it), hence 1e-8. Exact integrals are
    measurably elsewhere (>= 2.3e-4 relative)."""
    ds = _diff_sampler()
    model, _, _, x_T = setting(gmm, schedule, 9, False)
    grid = make_grid(grid_name, model.schedule, 9)

    def float64_constants():
        lo, hi = np.log(0.002 ** 2 + 1) / 1e-3, np.log(80 ** 2 + 1)
        beta_d = 2 * (lo - hi) / (1e-3 - 1)
        beta_min = hi - 0.5 * beta_d
        return beta_d, beta_min, (beta_d + beta_min) - beta_min
    monkeypatch.setattr(solvers.deis, "reference_constants", float64_constants)
    den = Denoiser(model)
    ours = get_solver(f"deis:order={order},quadrature=reference").sample_on(den, x_T, grid)
    ours = ours / model.schedule.alpha(grid[-1])
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        ref, calls = diff_sampler_run(ds, model, grid, x_T, order)
    finally:
        torch.set_default_dtype(default)
    assert rel_err(ours, ref) <= 1e-8
    assert den.nfe == calls == len(grid) - 1
    exact = get_solver(f"deis:order={order}").sample_on(Denoiser(model), x_T, grid)
    assert rel_err(exact / model.schedule.alpha(grid[-1]), ref) > 1e-4


@pytest.mark.parametrize("steps", [5, 9, 20])
@pytest.mark.parametrize("grid_name", ["karras", "time_quadratic"])
@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
def test_tab_reference_matches_diff_sampler_as_shipped(gmm, steps, grid_name, schedule):
    """diff-sampler as it runs (float32 quadrature sums, float32 sigma_min term) against ours (its constants,
    float64 sums): coefficients within 1e-4 of the step |sigma~_{i+1} - sigma~_i| (measured <= 2.7e-5, the
    worst on VE time_quadratic with 5 steps, where its float32 1 - abar near t = 1e-3 is coarse; <= 2e-6 on
    karras grids), final samples within 1e-4 relative on karras grids (measured <= 2.0e-5; up to 3.4e-4 on VE
    time_quadratic, where those coefficient errors meet an order-4 extrapolation over large steps)."""
    ds = _diff_sampler()
    model, _, _, x_T = setting(gmm, schedule, 9, False)
    grid = make_grid(grid_name, model.schedule, steps)
    s = (model.schedule.sigma(grid) / model.schedule.alpha(grid)).tolist()
    for order in (2, 3, 4):
        ref_c = ds.get_deis_coeff_list(torch.tensor(s, dtype=F64), order, deis_mode="tab")
        ours_c = tab_reference(s, [min(order, i + 1) for i in range(steps)])
        for i in range(1, steps):
            assert max(abs(float(a.detach()) - b) for a, b in zip(ref_c[i], ours_c[i])) <= 1e-4 * abs(s[i] - s[i + 1])
        if grid_name == "karras":
            ours = get_solver(f"deis:order={order},quadrature=reference").sample_on(Denoiser(model), x_T, grid)
            ref, _ = diff_sampler_run(ds, model, grid, x_T, order)
            assert rel_err(ours / model.schedule.alpha(grid[-1]), ref) <= 1e-4


def test_reference_quadrature_refuses_a_grid_onto_the_data_point(gmm):
    model = gmm("vp-discrete")
    with pytest.raises(PlanError):
        get_solver("deis:quadrature=reference,grid=linspace").plan(model.schedule, 10)
    get_solver("deis:grid=linspace").plan(model.schedule, 10)


# --- identities, exactness, options -----------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("grid_name", ["karras", "time_quadratic", "logSNR"])
def test_tab_on_ve_is_lms(gmm, order, grid_name):
    """On VE the model time is sigma~ itself: tAB interpolates in sigma~, which is the exact variable-step
    Adams-Bashforth method `lms`."""
    model = gmm("ve")
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * 80.0
    grid = make_grid(grid_name, model.schedule, 12)
    a = get_solver(f"deis:order={order}").sample_on(Denoiser(model), x_T, grid)
    b = get_solver(f"lms:order={order}").sample_on(Denoiser(model), x_T, grid)
    assert rel_err(a, b) <= 1e-12


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-discrete", "vp-cosine"])
@pytest.mark.parametrize("grid_name", ["time_quadratic", "karras", "logSNR", "time_uniform"])
def test_order_one_is_ddim(gmm, schedule, grid_name):
    model = gmm(schedule)
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    grid = make_grid(grid_name, model.schedule, 7)
    b = get_solver("ddim").sample_on(Denoiser(model), x_T, grid)
    for spec in ("deis:order=1", "deis:variant=logrho,order=1", "deis:order=1,quadrature=reference"):
        assert rel_err(get_solver(spec).sample_on(Denoiser(model), x_T, grid), b) <= 1e-12, spec


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-discrete", "vp-cosine", "ve"])
@pytest.mark.parametrize("grid_name", ["time_quadratic", "karras", "time_uniform"])
def test_exact_quadrature_is_converged(gmm, schedule, grid_name, monkeypatch):
    """The exact tab coefficients do not move when the quadrature is refined 8x in panels and 2x in points
    (every schedule, few and many steps, grids onto t = 0 too), to 1e-10 of the step |sbar_i - sbar_{i+1}|: the
    rounding floor of the by-parts form (boundary terms ~ sbar against a result ~ the step) is measured at
    3e-11 (200 steps, vp-cosine karras); the quadrature error itself is below it."""
    sched = gmm(schedule).schedule
    for steps, to_zero in ((1, False), (3, False), (10, True), (60, False), (200, True)):
        grid = make_grid(grid_name, sched, steps)
        if to_zero:
            grid = torch.cat([grid, torch.zeros(1, dtype=F64)])
        t = grid.numpy()
        s = (torch.exp(-sched.lambda_(grid))).tolist()
        orders = [min(4, i + 1) for i in range(len(t) - 1)]
        C = tab_exact(sched, t, s, orders)
        monkeypatch.setattr(solvers.deis, "PANELS", 64)
        monkeypatch.setattr(solvers.deis, "GL16", np.polynomial.legendre.leggauss(32))
        fine = tab_exact(sched, t, s, orders)
        monkeypatch.undo()
        for i, (row, frow) in enumerate(zip(C, fine)):
            scale = abs(s[i] - s[i + 1])
            assert np.allclose(row, frow, rtol=0, atol=1e-10 * scale), (steps, i, row, frow)
            assert abs(sum(row) - (s[i + 1] - s[i])) <= 1e-10 * scale   # constants are integrated exactly


def test_options_and_spec():
    assert get_solver("deis").spec == "deis" and get_solver("deis").nominal_order == 4
    assert get_solver("deis").options["grid"] == "time_quadratic"
    assert get_solver("deis:variant=logrho,order=2").spec == "deis:order=2,variant=logrho"
    for bad in ("deis:order=5", "deis:order=0", "deis:variant=logrho,quadrature=reference",
                "deis:lower_order_final=false", "deis:variant=rho"):
        with pytest.raises(solvers.SpecError):
            get_solver(bad)


def test_logrho_lower_order_final_plan():
    s = list(np.geomspace(80, 0.01, 11))
    assert get_solver("deis:variant=logrho,order=3").orders(s) == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert get_solver("deis:variant=logrho,order=3,lower_order_final=false").orders(s) == [1, 2] + [3] * 8
    assert get_solver("deis:order=4").orders(s) == [1, 2, 3] + [4] * 7
    assert get_solver("deis:variant=logrho,order=3").orders(list(np.geomspace(80, 0.01, 16))) == [1, 2] + [3] * 13
    assert get_solver("deis:variant=logrho,order=3,lower_order_final=false").orders(s[:-1] + [0.0])[-1] == 1


# --- NFE --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["deis", "deis:order=2", "deis:quadrature=reference", "deis:variant=logrho",
                                  "deis:variant=logrho,order=3,lower_order_final=false",
                                  "deis:grid=karras", "deis:variant=logrho,grid=logSNR"])
@pytest.mark.parametrize("schedule", ["vp-linear", "vp-discrete", "ve"])
def test_spends_at_most_its_budget_and_follows_its_plan(gmm, spec, schedule):
    model = gmm(schedule)
    solver = get_solver(spec)
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    x_T = x_T * float(model.schedule.sigma(model.schedule.T))
    for nfe in range(solver.min_nfe, 13):
        plan = solver.plan(model.schedule, nfe)
        den = Denoiser(model, budget=nfe)
        x = solver.sample(den, x_T, plan)
        assert torch.isfinite(x).all() and den.nfe == plan.nfe == nfe == plan.steps


@pytest.mark.parametrize("spec", ["deis", "deis:variant=logrho,order=3"])
def test_grid_onto_the_data_point(gmm, spec):
    """diffusers' spacings end at t = 0: the last step is an ordinary one (tab) or the jump to D (logrho)."""
    model = gmm("vp-discrete")
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    solver = get_solver(spec + (",grid=linspace" if ":" in spec else ":grid=linspace"))
    for nfe in (1, 2, 5, 10):
        plan = solver.plan(model.schedule, nfe)
        assert float(model.schedule.sigma(plan.grid[-1])) == 0.0
        den = Denoiser(model, budget=nfe)
        x = solver.sample(den, x_T, plan)
        assert torch.isfinite(x).all() and den.nfe == nfe


# --- convergence on the exact oracle (protocol of tests/test_core_convergence.py) ------------------------------

NFES = (80, 161, 320)
ORDERS = [   # (spec, asserted order, band); measured slopes in docs/solvers.md#deis
    ("deis:grid=logSNR", 4, 0.5),
    ("deis:order=3,grid=logSNR", 3, 0.35),
    ("deis:order=2,grid=logSNR", 2, 0.25),
    ("deis:grid=karras", 4, 0.5),
    ("deis:variant=logrho,order=2,grid=logSNR", 2, 0.25),
    ("deis:variant=logrho,order=3,grid=logSNR", 3, 0.35),
    ("deis:variant=logrho,order=4,grid=logSNR", 4, 0.5),
]


@pytest.fixture(scope="module")
def problem(gmm):
    model = gmm("vp-linear")
    xT = torch.randn(128, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    xT = xT * float(model.schedule.sigma(model.schedule.T))
    ends = make_grid("logSNR", model.schedule, 1)   # every grid here shares these endpoints
    ref = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(Denoiser(model), xT, ends)
    loose = get_solver("ode-dopri5:rtol=1e-10,atol=1e-10").sample_on(Denoiser(model), xT, ends)
    # the median distance to a 100x looser solve bounds the reference's error where the medians are compared:
    # deis:variant=logrho,order=4 reaches 4e-8 at NFE 320, below 20x the worst sample's bound (5.5e-9)
    return model, xT, ref, float((ref - loose).norm(dim=1).median())


@pytest.mark.parametrize("spec,order,band", ORDERS, ids=[o[0] for o in ORDERS])
def test_convergence_order(problem, spec, order, band):
    model, xT, ref, ref_err = problem
    med = []
    for nfe in NFES:
        solver = get_solver(spec)
        x = solver.sample(Denoiser(model, budget=nfe), xT, solver.plan(model.schedule, nfe))
        med.append(float((x - ref).norm(dim=1).median()))
    assert min(med) > 20 * ref_err, f"reference not accurate enough for {spec}: {med} vs {ref_err}"
    slope = -np.polyfit(np.log(NFES), np.log(med), 1)[0]
    assert abs(slope - order) <= band, f"{spec}: slope {slope:.3f} (errors {med})"
