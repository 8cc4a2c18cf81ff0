"""SA-Solver (solvers/sa_solver.py) against diffusers' SASolverScheduler (float64, the exact gmm2d oracle, the same
noise), its NFE and noise bookkeeping, identities with existing samplers, its weights, and its ODE-limit orders.

How both sides use the same numbers (as tests/test_core_diffusers.py): the scheduler's alphas_cumprod is replaced
by a float64 copy that our VPDiscrete is built from; set_timesteps stores its sigmas as float32, so they are
recomputed in float64 from the same table afterwards (sqrt((1 - abar)/abar) at its timesteps, then at step 0, its
formula); the diffusers side calls the eps-prediction oracle at t = t_of_step(n). Our grid is the scheduler's
timesteps followed by step 0 (t = t_min, diffusers' last sigma sqrt((1 - abar_0)/abar_0)), not the data point.
diffusers draws randn_tensor(shape, generator, dtype=float64) once per step; ours gets the same draws from an
equally seeded generator through a callable that logs the (sigma_a, sigma_b) of each call.
"""
import math

import numpy as np
import pytest
import torch

import models
import solvers.sa_solver  # noqa: F401  (registers sa-solver)
from solvers import Denoiser, VPDiscrete, get_solver, make_grid
from solvers.options import SpecError
from solvers.sa_solver import exp_moments, sa_weights

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install nfebench[test])")
from diffusers import SASolverScheduler  # noqa: E402

# diffusers' set_timesteps calls np.array on the (here float64 torch) alphas_cumprod table
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

F64 = torch.float64
TOL = 1e-10


class Drawn:
    """torch.randn(shape, generator, float64) per call, as diffusers draws them; logs each (sigma_a, sigma_b)."""

    def __init__(self, shape, seed):
        self.shape, self.g, self.log = shape, torch.Generator().manual_seed(seed), []

    def __call__(self, sigma_a, sigma_b):
        self.log.append((float(sigma_a), float(sigma_b)))
        return torch.randn(self.shape, generator=self.g, dtype=F64)


@pytest.fixture(scope="module")
def xT():
    return torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))


def run_diffusers(xT, n, seed, **config):
    """diffusers' SA-Solver in float64 -> (its sample, our model on the same table, our grid on its timesteps,
    its model calls)."""
    sch = SASolverScheduler(**config)
    ac = sch.alphas_cumprod.to(F64).clone()
    sch.alphas_cumprod = ac
    model = models.load_model("gmm2d:schedule=vp-discrete,prediction=eps", dtype=F64)
    model.schedule = VPDiscrete(alphas_cumprod=ac)
    sch.set_timesteps(n)
    ts = sch.timesteps
    sch.sigmas = torch.cat([((1 - ac[ts]) / ac[ts]).sqrt(), ((1 - ac[:1]) / ac[:1]).sqrt()])   # float64 (sec. 0.8)
    g, x, calls = torch.Generator().manual_seed(seed), xT.clone(), 0
    for step in ts:
        t = model.schedule.t_of_step(int(step)).expand(x.shape[0])
        x = sch.step(model.forward(x, t), step, x, generator=g).prev_sample
        calls += 1
    grid = torch.cat([model.schedule.t_of_step(ts.to(F64)), model.schedule.t_of_step(torch.zeros(1, dtype=F64))])
    return x, model, grid, calls


def compare(xT, spec, n, seed=5, **config):
    ref, model, grid, calls = run_diffusers(xT, n, seed, **config)
    den, noise = Denoiser(model), Drawn(xT.shape, seed)
    solver = get_solver(spec)
    ours = solver.sample_on(den, xT, grid, generator=noise)
    diff = float((ours - ref).abs().max())
    assert diff <= TOL * max(1.0, float(ref.abs().max())), f"{spec}, N = {n}: max abs diff {diff:.3g}"
    assert den.nfe == calls == n == solver.plan_on(model.schedule, grid).nfe
    sig = (model.schedule.sigma(grid) / model.schedule.alpha(grid)).tolist()
    assert noise.log == [(sig[i], sig[i + 1]) for i in range(n)], "one draw a step, on the step's sigma~ interval"
    return ours, model, grid


@pytest.mark.parametrize("n", [10, 20])
@pytest.mark.parametrize("P,C", [(2, 2), (3, 4), (1, 1), (2, 1), (3, 3), (4, 2)])
def test_matches_diffusers(xT, P, C, n):
    spec = "sa-solver" + ("" if (P, C) == (2, 2) else f":corrector_order={C},predictor_order={P}")
    ours, model, grid = compare(xT, spec, n, predictor_order=P, corrector_order=C)
    if (P, C) == (2, 2):   # a torch.Generator through our noise sampler draws the same stream
        again = get_solver(spec).sample_on(Denoiser(model), xT, grid, generator=torch.Generator().manual_seed(5))
        assert torch.equal(again, ours)


@pytest.mark.parametrize("spec,n,config", [
    ("sa-solver:tau=0", 10, {"tau_func": lambda t: 0}),                                   # the ODE
    ("sa-solver:tau=0.5", 10, {"tau_func": lambda t: 0.5 if 200 <= t <= 800 else 0}),     # the amplitude
    ("sa-solver:tau_end=1,tau_start=0", 10, {"tau_func": lambda t: 1}),                   # the reverse SDE
    ("sa-solver:corrector_order=4,lower_order_final=false,predictor_order=3", 10,
     {"lower_order_final": False, "predictor_order": 3, "corrector_order": 4}),
    ("sa-solver:lower_order_final=false", 20, {"lower_order_final": False}),
    ("sa-solver", 4, {"timestep_spacing": "leading"}),      # timesteps 800, 600, 400, 200: the window's edges
    ("sa-solver", 5, {"timestep_spacing": "trailing"}),     # 999, 799, ..., 199: just outside it
    ("sa-solver:corrector_order=4,predictor_order=3", 3, {"predictor_order": 3, "corrector_order": 4}),
    ("sa-solver", 1, {}),
])
def test_options_match_diffusers(xT, spec, n, config):
    compare(xT, spec, n, **config)


def test_tau_window_is_read_at_the_step_start(gmm):
    """The default window: u = n / 1000 in [0.2, 0.8] on a discrete schedule (diffusers' 200 <= n <= 800), t/T on a
    continuous one."""
    solver = get_solver("sa-solver")
    vpd = gmm("vp-discrete").schedule
    grid = make_grid("linspace", vpd, 10)       # steps 999, 899, 799, ..., 200, 100, then the data point
    assert solver.taus(vpd, grid) == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    edges = vpd.t_of_step(torch.tensor([801.0, 800, 200, 199], dtype=F64))
    assert solver.taus(vpd, edges) == [0, 1, 1, 0]
    vpl = gmm("vp-linear").schedule
    assert solver.taus(vpl, torch.tensor([0.81, 0.8, 0.5, 0.2, 0.19], dtype=F64)) == [0, 1, 1, 1, 0]
    assert get_solver("sa-solver:tau=0.3").taus(vpl, torch.tensor([0.5, 0.1], dtype=F64)) == [0.3, 0]


def test_tau_zero_is_the_ode_and_still_draws(gmm):
    """tau = 0: one draw a step all the same (diffusers' stream), none of which changes the sample."""
    model = gmm("vp-linear")
    solver = get_solver("sa-solver:tau=0")
    assert not solver.stochastic and get_solver("sa-solver").stochastic
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.99
    plan = solver.plan(model.schedule, 12)
    a_noise, b_noise = Drawn(x_T.shape, 1), Drawn(x_T.shape, 2)
    a = solver.sample(Denoiser(model), x_T, plan, generator=a_noise)
    b = solver.sample(Denoiser(model), x_T, plan, generator=b_noise)
    assert torch.equal(a, b) and len(a_noise.log) == len(b_noise.log) == 12
    c = get_solver("sa-solver").sample(Denoiser(model), x_T, plan, generator=Drawn(x_T.shape, 1))
    assert (c - a).abs().max() > 1e-3, "tau = 1 in the window moves the sample"


def test_identities(gmm):
    """First order without a corrector: tau = 0 is DDIM (the first-order exponential integrator); tau = 1 at every
    step is DDPM ancestral sampling (euler-ancestral, eta = 1: sigma_down = sigma_{i+1} e^{-h}, sigma_up =
    sigma_{i+1} sqrt(1 - e^{-2h})), with the same noise."""
    model = gmm("vp-linear")
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(3)) * 0.99
    grid = make_grid("logSNR", model.schedule, 9)
    ode = get_solver("sa-solver:corrector_order=0,predictor_order=1,tau=0").sample_on(Denoiser(model), x_T, grid)
    ddim = get_solver("ddim").sample_on(Denoiser(model), x_T, grid)
    assert (ode - ddim).abs().max() <= 1e-12
    sde = get_solver("sa-solver:corrector_order=0,predictor_order=1,tau_end=1,tau_start=0")
    ours = sde.sample_on(Denoiser(model), x_T, grid, generator=Drawn(x_T.shape, 4))
    anc = get_solver("euler-ancestral").sample_on(Denoiser(model), x_T, grid, generator=Drawn(x_T.shape, 4))
    assert (ours - anc).abs().max() <= 1e-12


def test_a_grid_ending_at_the_data_point(gmm):
    """diffusers' spacings in nfebench end at t = 0: the last step returns D (no noise), the rest as usual."""
    model = gmm("vp-discrete")
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    grid = make_grid("linspace", model.schedule, 8)
    for spec in ("sa-solver", "sa-solver:corrector_order=4,lower_order_final=false,predictor_order=3"):
        den, noise = Denoiser(model), Drawn(x_T.shape, 0)
        x = get_solver(spec).sample_on(den, x_T, grid, generator=noise)
        assert torch.isfinite(x).all() and den.nfe == 8 and len(noise.log) == 7


def test_weights():
    """The weights c_k are exact (checked against 60-point Gauss-Legendre) except the order-2 form, which
    interpolates constants and lines in the data term exactly as the exact weights do up to O(h^3)."""
    x, w = np.polynomial.legendre.leggauss(60)
    for a, h in [(1.0, 0.3), (2.0, 0.05), (2.0, 1.7), (1.25, 4.0), (5.0, 3.0), (1.0, 1e-4)]:
        lam_s, lam_t = -0.7, -0.7 + h
        lam = (lam_s + lam_t) / 2 + h / 2 * x
        kernel = a * np.exp(a * (lam - lam_t)) * h / 2 * w
        for nodes in ([lam_s, lam_s - 0.8 * h, lam_s - 1.9 * h], [lam_t, lam_s, lam_s - 1.1 * h, lam_s - 2 * h],
                      [lam_s, lam_s - h, lam_s - 2 * h, lam_s - 3.5 * h], [lam_t]):
            got = sa_weights(nodes, lam_s, lam_t, a)
            for k, mu in enumerate(nodes):
                basis = np.prod([(lam - m) / (mu - m) for j, m in enumerate(nodes) if j != k] or [np.ones_like(lam)],
                                axis=0)
                assert got[k] == pytest.approx(float(np.sum(kernel * basis)), rel=1e-12, abs=1e-15)
        two = sa_weights([lam_s, lam_s - 0.8 * h], lam_s, lam_t, a)
        assert sum(two) == pytest.approx(-math.expm1(-a * h), rel=1e-13)
        line = two[1] * (-0.8 * h)                  # D = lambda - lambda_s at the nodes: 0, -0.8 h
        assert abs(line - float(np.sum(kernel * (lam - lam_s)))) <= a * a * h ** 3 / 6 * (1 + 1e-9)


def test_exp_moments_on_both_branches():
    """I_m(x) = x int_0^1 e^{-x w} w^m dw: the series (x < 4) and the recurrence (x >= 4) against quadrature."""
    w, g = np.polynomial.legendre.leggauss(80)
    w, g = (w + 1) / 2, g / 2
    for x in (1e-6, 0.01, 0.5, 3.99, 4.0, 4.01, 9.0, 60.0):
        for m, got in enumerate(exp_moments(x, 4)):
            assert got == pytest.approx(x * float(np.sum(g * np.exp(-x * w) * w ** m)), rel=1e-13)
    assert exp_moments(800.0, 4) == pytest.approx([1, 1 / 800, 2 / 800 ** 2, 6 / 800 ** 3], rel=1e-15)


def test_options_and_capabilities():
    assert get_solver("sa-solver").nominal_order == 2 and get_solver("sa-solver").history_length == 2
    assert get_solver("sa-solver:corrector_order=4,predictor_order=3").nominal_order == 4
    assert get_solver("sa-solver:corrector_order=1,predictor_order=3").nominal_order == 1
    assert get_solver("sa-solver:corrector_order=3,predictor_order=1").nominal_order == 2   # min(C, P + 1)
    assert get_solver("sa-solver:corrector_order=0,predictor_order=3").nominal_order == 3
    assert get_solver("sa-solver:tau=0").spec == "sa-solver:tau=0.0"
    for bad in ("sa-solver:tau_end=0.1,tau_start=0.5", "sa-solver:predictor_order=5", "sa-solver:predictor_order=0",
                "sa-solver:corrector_order=5", "sa-solver:tau=-1", "sa-solver:tau_end=1.5"):
        with pytest.raises(SpecError):
            get_solver(bad)


@pytest.mark.parametrize("spec", ["sa-solver", "sa-solver:corrector_order=4,predictor_order=3",
                                  "sa-solver:corrector_order=0", "sa-solver:lower_order_final=false,tau=0"])
def test_spends_at_most_its_budget_and_follows_its_plan(gmm, spec):
    model = gmm("vp-linear")
    solver = get_solver(spec)
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for nfe in range(solver.min_nfe, 13):
        plan = solver.plan(model.schedule, nfe)
        den, noise = Denoiser(model, budget=nfe), Drawn(x_T.shape, 1)
        x = solver.sample(den, x_T, plan, generator=noise)
        assert torch.isfinite(x).all() and den.nfe == plan.nfe == plan.steps == nfe == len(noise.log)


# --- ODE-limit orders (tau = 0), the protocol of tests/test_core_convergence.py -----------------------------
# gmm2d vp-linear, logSNR grid, NFE 80/161/320, median per-sample error against a tight dopri5 solve.
# lower_order_final (the reference's default at every N) ends on a first-order step: its O(h^2) local error
# makes every setting second order asymptotically; over NFE 80..320 the higher orders still show (P3C4 2.64).
# Without it: P3C4 3.59, P3C3 3.03. A first-order corrector makes the method first order (P3C1 0.97), and the
# corrector gains at most one order over the predictor (P1C3 2.03: min(C, P + 1)).
ORDERS = [   # (options, slope bounds; measured)
    ("tau=0", 1.85, 2.3),                                              # 2.08
    ("corrector_order=4,predictor_order=3,tau=0", 2.3, 3.0),           # 2.64
    ("corrector_order=1,predictor_order=3,tau=0", 0.85, 1.15),         # 0.97
    ("corrector_order=3,predictor_order=1,tau=0", 1.8, 2.25),          # 2.03
    ("corrector_order=0,predictor_order=3,tau=0", 2.7, 3.35),          # 3.05
    ("corrector_order=4,lower_order_final=false,predictor_order=3,tau=0", 3.3, 4.5),   # 3.59
    ("corrector_order=3,lower_order_final=false,predictor_order=3,tau=0", 2.7, 3.35),  # 3.03
]
NFES = (80, 161, 320)


@pytest.fixture(scope="module")
def problem(gmm):
    model = gmm("vp-linear")
    xT = torch.randn(128, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(
        model.schedule.sigma(model.schedule.T))
    ends = make_grid("logSNR", model.schedule, 1)
    ref = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(Denoiser(model), xT, ends)
    # the worst distance to a 10x looser solve bounds the reference's own error (tests/test_core_convergence.py
    # uses 100x; P3C4 without lower_order_final reaches 7e-8 at NFE 320, below 20 times that bound)
    loose = get_solver("ode-dopri5:rtol=1e-11,atol=1e-11").sample_on(Denoiser(model), xT, ends)
    return model, xT, ref, float((ref - loose).norm(dim=1).max())


@pytest.mark.parametrize("options,lo,hi", ORDERS, ids=[o[0] for o in ORDERS])
def test_ode_limit_order(problem, run_solver, options, lo, hi):
    model, xT, ref, ref_err = problem
    used, med = [], []
    for nfe in NFES:
        x, n = run_solver(f"sa-solver:{options}", model, xT, nfe)
        used.append(n)
        med.append(float((x - ref).norm(dim=1).median()))
    assert min(med) > 20 * ref_err, f"reference not accurate enough: {med} vs {ref_err}"
    slope = -np.polyfit(np.log(used), np.log(med), 1)[0]
    assert lo <= slope <= hi, f"{options}: slope {slope:.3f} (errors {med}, NFE {used})"
