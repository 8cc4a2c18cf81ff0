"""Heavy-ball momentum (plms+hb, dpmpp-2m+hb) and GHVB: reductions, definitions by hand, NFE, order, options.

Orders (gmm2d, vp-linear, logSNR grid, median per-sample error over NFE 80..320): HB with beta < 1 is first order
(Theorem 1): plms+hb 0.94, dpmpp-2m+hb 0.98. GHVB keeps the order of its multistep base, which on a logSNR
grid is 2 for every constant-coefficient AB method (see test_pndm): ghvb 1.5 / 2.5 / 3.5 measured 2.00 / 1.93 /
1.99 there; on steps uniform in sbar 2.5 and 3.5 measured 2.65 and 3.29 (NFE 20..160, pre-asymptotic).
"""
import numpy as np
import pytest
import torch

import models
from solvers import Denoiser, NFEBudgetExceeded, SpecError, get_solver, make_grid
from solvers.momentum import ghvb_coefficients, momentum_number
from solvers.pndm import AB, transfer

F64 = torch.float64
TOL = 1e-12


def noise(n, seed=0, scale=1.0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def vp_linear():
    return models.load_model("gmm2d:schedule=vp-linear", dtype=F64)


@pytest.fixture(scope="module")
def discrete():
    return models.load_model("gmm2d", dtype=F64)


def same(model, a, b, grid, xT):
    return float((get_solver(a).sample_on(Denoiser(model), xT, grid) - get_solver(b).sample_on(Denoiser(model), xT, grid))
                 .abs().max())


def grids(vp_linear, discrete):
    return [(vp_linear, make_grid("logSNR", vp_linear.schedule, 12)),
            (vp_linear, make_grid("time_uniform", vp_linear.schedule, 7)),
            (discrete, make_grid("leading", discrete.schedule, 10)),
            (discrete, make_grid("linspace", discrete.schedule, 20))]


# --- reductions ------------------------------------------------------------------------------------------
def test_heavy_ball_with_beta_one_is_its_base(vp_linear, discrete):
    xT = noise(64, 1)
    for model, g in grids(vp_linear, discrete):
        assert same(model, "dpmpp-2m+hb:beta=1", "dpmpp-2m", g, xT) <= TOL
        assert same(model, "dpmpp-2m+hb:beta=1,lower_order_final=false", "dpmpp-2m:lower_order_final=false",
                    g, xT) <= TOL
        for k in (2, 3, 4):
            assert same(model, f"plms+hb:beta=1,order={k}", f"plms:order={k},warmup=ab", g, xT) <= TOL


def test_ghvb_with_an_integer_order_is_plms_with_ab_warm_up(vp_linear, discrete):
    """The spec's base of GHVB r.0 is the momentum paper's PLMS-r (AB1..AB_{r-1} warm-up); r = 1 is DDIM."""
    xT = noise(64, 2)
    for model, g in grids(vp_linear, discrete):
        assert same(model, "ghvb:order=1", "ddim", g, xT) <= TOL
        for r in (2, 3, 4):
            assert same(model, f"ghvb:order={r}", f"plms:order={r},warmup=ab", g, xT) <= TOL
        assert same(model, "ghvb:order=4,beta=0.8", "ghvb:order=3.8", g, xT) == 0


def test_momentum_differs_from_its_base(vp_linear):
    g, xT = make_grid("logSNR", vp_linear.schedule, 10), noise(64, 3)
    assert same(vp_linear, "dpmpp-2m+hb", "dpmpp-2m", g, xT) > 1e-3
    assert same(vp_linear, "plms+hb", "plms:warmup=ab", g, xT) > 1e-3
    assert same(vp_linear, "ghvb", "plms:warmup=ab", g, xT) > 1e-3


# --- definitions -----------------------------------------------------------------------------------------
def test_ghvb_coefficients():
    for c in range(1, 6):
        assert ghvb_coefficients(c, 1.0) == pytest.approx(AB[c], abs=1e-15)     # beta = 1: AB_c
        for beta in (0.1, 0.5, 0.8):
            assert sum(ghvb_coefficients(c, beta)) == pytest.approx(1.0, abs=1e-14)   # consistent slope
    # the spec's row c = 2, [(2 + b), -(2 - b)] / 2, divided by b = 0.5
    assert ghvb_coefficients(2, 0.5) == pytest.approx((2.5, -1.5))
    assert momentum_number(3.8) == (4, 0.8) and momentum_number(0.5) == (1, 0.5)
    assert momentum_number(2.0) == (2, 1.0) and momentum_number(1.5) == (2, 0.5)


def test_plms_hb_and_ghvb_by_hand(vp_linear):
    sched, beta = vp_linear.schedule, 0.6
    g, xT = make_grid("time_uniform", sched, 3), noise(16, 4)
    den = Denoiser(vp_linear)
    # plms+hb, order 2: v1 = e0; v2 = (1 - b) v1 + b (3 e1 - e0)/2; v3 = (1 - b) v2 + b (3 e2 - e1)/2
    e0 = den.eps(xT, g[0])
    x1 = transfer(sched, xT, e0, g[0], g[1])
    e1 = den.eps(x1, g[1])
    v2 = (1 - beta) * e0 + beta * (3 * e1 - e0) / 2
    x2 = transfer(sched, x1, v2, g[1], g[2])
    e2 = den.eps(x2, g[2])
    x3 = transfer(sched, x2, (1 - beta) * v2 + beta * (3 * e2 - e1) / 2, g[2], g[3])
    assert (get_solver(f"plms+hb:order=2,beta={beta}").sample_on(Denoiser(vp_linear), xT, g) - x3).abs().max() <= TOL
    # ghvb 1.6 (r = 2, beta = 0.6): v1 = e0, slope v1; v2 = (1 - b) v1 + b e1, slope ((2 + b) v2 - (2 - b) v1)/(2 b)
    v2 = (1 - beta) * e0 + beta * e1
    x2 = transfer(sched, x1, ((2 + beta) * v2 - (2 - beta) * e0) / (2 * beta), g[1], g[2])
    e2 = den.eps(x2, g[2])
    v3 = (1 - beta) * v2 + beta * e2
    x3 = transfer(sched, x2, ((2 + beta) * v3 - (2 - beta) * v2) / (2 * beta), g[2], g[3])
    assert (get_solver("ghvb:order=1.6").sample_on(Denoiser(vp_linear), xT, g) - x3).abs().max() <= TOL


def test_dpmpp_2m_hb_by_hand(vp_linear):
    """v starts at the first x0 prediction (the ADM fork); the first-order first step bypasses momentum."""
    sched, beta = vp_linear.schedule, 0.7
    g, xT = make_grid("logSNR", vp_linear.schedule, 3), noise(16, 5)
    den = Denoiser(vp_linear)
    lam = sched.lambda_(g)
    alpha, sigma = sched.alpha(g), sched.sigma(g)

    def step(x, i, D):
        return sigma[i + 1] / sigma[i] * x - alpha[i + 1] * torch.expm1(-(lam[i + 1] - lam[i])) * D

    m0 = den.x0(xT, g[0])
    x1 = step(xT, 0, m0)
    m1 = den.x0(x1, g[1])
    v = (1 - beta) * m0 + beta * (m1 + (m1 - m0) / (2 * (lam[1] - lam[0]) / (lam[2] - lam[1])))
    x2 = step(x1, 1, v)
    x3 = step(x2, 2, den.x0(x2, g[2]))     # 3 < 15 steps: lower_order_final makes the last step first order
    assert (get_solver(f"dpmpp-2m+hb:beta={beta}").sample_on(Denoiser(vp_linear), xT, g) - x3).abs().max() <= TOL


# --- NFE and options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["plms+hb", "ghvb", "ghvb:order=2.5", "dpmpp-2m+hb"])
def test_budget_is_spent_exactly(vp_linear, discrete, spec):
    s = get_solver(spec)
    assert s.min_nfe == 1
    xT = noise(8)
    for model, top in ((vp_linear, 50), (discrete, 20)):
        for nfe in range(1, top + 1):
            den = Denoiser(model, budget=nfe)
            assert torch.isfinite(s.sample_on(den, xT, s.plan(model.schedule, nfe))).all()
            assert den.nfe == nfe
    with pytest.raises(NFEBudgetExceeded):
        s.sample_on(Denoiser(vp_linear, budget=9), xT, s.plan(vp_linear.schedule, 10))


def test_defaults():
    assert get_solver("dpmpp-2m+hb").beta == 0.8
    s = get_solver("plms+hb")
    assert (s.beta, s.order) == (0.9, 4)
    s = get_solver("ghvb")
    assert (s.r, s.momentum) == (4, 0.8)


@pytest.mark.parametrize("spec,pattern", [
    ("plms+hb:beta=0", r"beta=0.0 for solver 'plms\+hb' not accepted: need 0 < beta <= 1"),
    ("dpmpp-2m+hb:beta=1.5", r"beta=1.5 .* need 0 < beta <= 1"),
    ("ghvb:order=3.5,beta=0.8", r"give either the momentum number .* or an integer order with beta"),
    ("ghvb:order=6", r"order=6.0 for solver 'ghvb' not accepted: the momentum number must be in \(0, 5\]"),
    ("ghvb:order=0", r"momentum number must be in"),
    ("ghvb:order=4,beta=-0.2", r"beta=-0.2 .* need 0 < beta <= 1"),
    ("plms+hb:order=6", r"order=6 .* choose one of: 1, 2, 3, 4, 5"),
    ("dpmpp-2m+hb:solver_type=taylor", r"unknown option 'solver_type'"),
])
def test_bad_options(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)


@pytest.mark.parametrize("spec", ["plms+hb:grid=logSNR", "dpmpp-2m+hb"])
def test_heavy_ball_is_first_order(vp_linear, spec):
    sched = vp_linear.schedule
    xT = noise(128, 0, float(sched.sigma(sched.T)))
    ref = get_solver("ode-dopri5:rtol=1e-12,atol=1e-12").sample_on(Denoiser(vp_linear), xT, make_grid("logSNR", sched, 1))
    s, used, err = get_solver(spec), [], []
    for nfe in (80, 160, 320):
        den = Denoiser(vp_linear)
        err.append(float((s.sample_on(den, xT, s.plan(sched, nfe)) - ref).norm(dim=1).median()))
        used.append(den.nfe)
    slope = -np.polyfit(np.log(used), np.log(err), 1)[0]
    assert abs(slope - 1) <= 0.2, (slope, err)
