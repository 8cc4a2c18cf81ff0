"""PNDM family (plms, s-pndm, f-pndm): parity with diffusers' PNDMScheduler, NFE rules, eps conversion, orders.

Parity (float64, eps-prediction gmm2d oracle, integer timestep n evaluated at t = (n + 1)/1000, identical
tables: the scheduler's alphas_cumprod is its float64 copy, final_alpha_cumprod a float64 1 since our
'leading' grid ends at the data point = set_alpha_to_one=True). PNDMScheduler.step keeps the sample's dtype.
* plms = PNDMScheduler(skip_prk_steps=True): its timestep list repeats t_1 (the pseudo-Heun corrector's state is
  evaluated again), so it makes steps + 1 evaluations, our NFE.
* f-pndm = PNDMScheduler(skip_prk_steps=False) where the stride N // S is even: diffusers rounds the pseudo-RK
  mid time down to t - floor(d/2) training steps, ours is (t + t')/2 (the official PNDM code's), so the two
  agree only when d/2 is an integer (S = 8: d = 125 differs by 8e-4).

Orders (gmm2d, vp-linear, 128 samples, dopri5 reference, median per-sample error): the AB coefficients are
constant, which is exact only for steps uniform in sbar = sigma/alpha (the transfer's clock). On a logSNR grid
(geometric in sbar) each step then errs by O(h^3), so every member is second order: plms 1.96/1.98/1.95 over
NFE 10..80 (seeds 0/1/2; traj_rmse slopes 1.88/1.81/1.23, separatrix-dominated). On a segment of the flow with
steps uniform in sbar the design orders appear: f-pndm 4.4 (pseudo-RK warm-up), plms 3.8 (pseudo-Heun warm-up,
local O(h^3): asymptotically 3), s-pndm 2.1.
"""
import numpy as np
import pytest
import torch

import models
from solvers import Denoiser, NFEBudgetExceeded, SpecError, VPDiscrete, get_solver, make_grid

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def noise(n, seed=0, scale=1.0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def vp_linear():
    return models.load_model("gmm2d:schedule=vp-linear", dtype=F64)


# --- diffusers parity ------------------------------------------------------------------------------------
def _run_diffusers(xT, n, skip_prk_steps):
    from diffusers import PNDMScheduler
    sch = PNDMScheduler(skip_prk_steps=skip_prk_steps, set_alpha_to_one=True, timestep_spacing="leading")
    ac = sch.alphas_cumprod.to(F64).clone()
    sch.alphas_cumprod, sch.final_alpha_cumprod = ac, torch.tensor(1.0, dtype=F64)
    model = models.load_model("gmm2d:prediction=eps", dtype=F64)
    model.schedule = VPDiscrete(alphas_cumprod=ac)
    sch.set_timesteps(n)
    x = xT.clone()
    for step in sch.timesteps:
        t = model.schedule.t_of_step(int(step)).expand(x.shape[0])
        x = sch.step(model.forward(x, t), step, x).prev_sample
    return model, sch.timesteps, x


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 10, 20, 25, 50])
def test_plms_matches_diffusers(n):
    pytest.importorskip("diffusers")
    xT = noise(64)
    model, ts, ref = _run_diffusers(xT, n, skip_prk_steps=True)
    grid = make_grid("leading", model.schedule, n)
    steps = model.schedule.model_time(grid[:-1]).round().long().tolist()
    assert ts.tolist() == steps[:2] + steps[1:]          # t_1 repeated: the warm-up's second evaluation
    s = get_solver("plms")
    assert s.plan(model.schedule, n + 1).grid.tolist() == grid.tolist()
    den = Denoiser(model, budget=n + 1)
    x = s.sample_on(den, xT, grid)
    assert den.nfe == len(ts) == n + 1
    assert (x - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("n", [4, 5, 10, 20, 25, 50])
def test_f_pndm_matches_diffusers_pseudo_rk(n):
    pytest.importorskip("diffusers")
    xT = noise(64)
    model, ts, ref = _run_diffusers(xT, n, skip_prk_steps=False)
    den = Denoiser(model, budget=n + 9)
    x = get_solver("f-pndm").sample_on(den, xT, make_grid("leading", model.schedule, n))
    assert den.nfe == len(ts) == n + 9
    assert (x - ref).abs().max() <= 1e-6


# --- definitions -----------------------------------------------------------------------------------------
def test_s_pndm_by_hand(vp_linear):
    """Step 1 pseudo-Heun (only e1 enters the history), then AB2 (3 e_t - e_{t+d}) / 2, eq. (9) transfers."""
    sched, den = vp_linear.schedule, Denoiser(vp_linear)
    g = make_grid("time_uniform", sched, 3)
    xT = noise(16, 1)

    def phi(x, e, a, b):   # PNDM eq. (9) in abar form
        a, b = sched.alpha(a) ** 2, sched.alpha(b) ** 2
        return (b / a).sqrt() * x - (b - a) * e / (a * (1 - b).sqrt() + (a * b * (1 - a)).sqrt())

    e0 = den.eps(xT, g[0])
    e1h = den.eps(phi(xT, e0, g[0], g[1]), g[1])
    x1 = phi(xT, (e0 + e1h) / 2, g[0], g[1])
    e1 = den.eps(x1, g[1])
    x2 = phi(x1, (3 * e1 - e0) / 2, g[1], g[2])
    e2 = den.eps(x2, g[2])
    x3 = phi(x2, (3 * e2 - e1) / 2, g[2], g[3])
    x = get_solver("s-pndm").sample_on(Denoiser(vp_linear), xT, g)
    assert (x - x3).abs().max() <= 1e-12
    assert torch.equal(get_solver("plms:order=2").sample_on(Denoiser(vp_linear), xT, g), x)


def test_first_order_members_are_ddim(vp_linear):
    g = make_grid("time_uniform", vp_linear.schedule, 6)
    xT = noise(32, 2)
    ref = get_solver("ddim").sample_on(Denoiser(vp_linear), xT, g)
    for spec in ("plms:order=1,warmup=ab", "plms:order=1,warmup=prk"):
        assert (get_solver(spec).sample_on(Denoiser(vp_linear), xT, g) - ref).abs().max() <= 1e-12, spec


@pytest.mark.parametrize("spec", ["plms", "f-pndm"])
def test_model_outputs_are_combined_as_eps(spec):
    """x0-, eps- and v-prediction of the same oracle give the same samples (diffusers' PNDM combines raw v)."""
    xT = noise(32, 3)
    out = []
    for pred in ("eps", "x0", "v"):
        model = models.load_model(f"gmm2d:prediction={pred}", dtype=F64)
        s = get_solver(spec)
        out.append(s.sample_on(Denoiser(model), xT, s.plan(model.schedule, 15)))
    assert (out[1] - out[0]).abs().max() <= 1e-10 and (out[2] - out[0]).abs().max() <= 1e-10


# --- NFE, grids, options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,min_nfe,extra", [
    ("plms", 3, 1), ("s-pndm", 3, 1), ("f-pndm", 13, 9), ("plms:warmup=ab", 1, 0), ("plms:warmup=prk", 13, 9),
    ("plms:order=2,warmup=prk", 5, 3),
])
def test_nfe_rule_and_budget(vp_linear, spec, min_nfe, extra):
    s = get_solver(spec)
    assert s.min_nfe == min_nfe
    with pytest.raises(SpecError, match=f"below the minimum for solver '{s.name}': {min_nfe}"):
        s.plan(vp_linear.schedule, min_nfe - 1)
    discrete = models.load_model("gmm2d", dtype=F64)
    xT = noise(8)
    # every budget up to 50 on the default grid of a continuous schedule; a range on grids ending at sigma = 0
    for model, grid, top in ((vp_linear, None, 50), (discrete, None, min_nfe + 12), (discrete, "trailing", 20)):
        s = get_solver(spec + (("," if ":" in spec else ":") + f"grid={grid}" if grid else ""))
        for nfe in range(min_nfe, top + 1):
            g = s.plan(model.schedule, nfe)
            assert g.steps == nfe - extra and g.nfe == nfe
            den = Denoiser(model, budget=nfe)
            assert torch.isfinite(s.sample_on(den, xT, g)).all()
            assert den.nfe == nfe, (spec, grid, nfe)
        with pytest.raises(NFEBudgetExceeded):
            s.sample_on(Denoiser(model, budget=min_nfe + 3), xT, s.plan(model.schedule, min_nfe + 4))


def test_default_grids(vp_linear):
    """The papers' uniform grid k * (N // S) on a discrete schedule; uniform in t on a continuous one."""
    discrete = models.load_model("gmm2d", dtype=F64)
    for name in ("plms", "s-pndm", "f-pndm"):
        s = get_solver(name)
        steps = 20 - s.extra_nfe
        assert torch.equal(s.plan(discrete.schedule, 20).grid, make_grid("leading", discrete.schedule, steps))
        assert torch.equal(s.plan(vp_linear.schedule, 20).grid, make_grid("time_uniform", vp_linear.schedule, steps))
    with pytest.raises(ValueError, match="needs a discrete"):
        get_solver("plms:grid=leading").plan(vp_linear.schedule, 20)


def test_f_pndm_warm_up_onto_sigma_zero_is_a_multistep_step():
    """A grid shorter than the warm-up that ends at sigma = 0: no stage is evaluated there."""
    model = models.load_model("gmm2d", dtype=F64)
    den = Denoiser(model)
    x = get_solver("f-pndm").sample_on(den, noise(8), make_grid("leading", model.schedule, 3))
    assert torch.isfinite(x).all() and den.nfe == 4 + 4 + 1


@pytest.mark.parametrize("spec,pattern", [
    ("plms:order=5", r"order=5 for solver 'plms' not accepted; choose one of: 1, 2, 3, 4"),
    ("plms:warmup=rk", r"warmup=rk .* choose one of: heun, prk, ab"),
    ("s-pndm:order=3", r"unknown option 'order' for solver 's-pndm'"),
])
def test_bad_options(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)


# --- convergence order -----------------------------------------------------------------------------------
def _slope(model, xT, ref, spec, grids):
    used, err = [], []
    for g in grids:
        den = Denoiser(model)
        x = get_solver(spec).sample_on(den, xT, g)
        used.append(den.nfe)
        err.append(float((x - ref).norm(dim=1).median()))
    return -np.polyfit(np.log(used), np.log(err), 1)[0], err


def test_plms_is_second_order_on_a_logsnr_grid(vp_linear):
    sched = vp_linear.schedule
    xT = noise(128, 0, float(sched.sigma(sched.T)))
    ref = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(Denoiser(vp_linear), xT, make_grid("logSNR", sched, 1))
    s = get_solver("plms:grid=logSNR")
    slope, err = _slope(vp_linear, xT, ref, "plms", [s.plan(sched, n) for n in (10, 20, 40, 80)])
    assert abs(slope - 2) <= 0.25, (slope, err)


@pytest.mark.parametrize("spec,order,band", [("f-pndm", 4, 0.5), ("s-pndm", 2, 0.3)])
def test_design_order_on_steps_uniform_in_sbar(vp_linear, spec, order, band):
    """From the exact state at sbar = 3 to sbar = 0.3 with steps uniform in sbar, where AB is exact."""
    sched = vp_linear.schedule

    def t_of_sbar(sb):
        return sched.t_of_lambda(-torch.log(torch.as_tensor(sb, dtype=F64)))

    ta, tb = t_of_sbar(3.0), t_of_sbar(0.3)
    dop = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12")
    xa = dop.sample_on(Denoiser(vp_linear), noise(128, 0, float(sched.sigma(sched.T))),
                    torch.stack([torch.tensor(sched.T, dtype=F64), ta]))
    ref = dop.sample_on(Denoiser(vp_linear), xa, torch.stack([ta, tb]))
    grids = []
    for S in (20, 40, 80, 160):
        g = t_of_sbar(torch.linspace(3.0, 0.3, S + 1, dtype=F64))
        g[0], g[-1] = ta, tb
        grids.append(g)
    slope, err = _slope(vp_linear, xa, ref, spec, grids)
    assert abs(slope - order) <= band, (slope, err)
