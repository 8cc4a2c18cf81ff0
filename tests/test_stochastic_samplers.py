"""The stochastic and Adams samplers against k-diffusion (float64, exact gmm2d oracle, the same injected noise),
their NFE, noise bookkeeping and identities (docs/solvers.md)."""
import math

import numpy as np
import pytest
import torch

from solvers import Denoiser, get_solver, make_grid
from solvers.noise_sampler import StepNoise
from tests.kdiffusion import k_sampling

F64 = torch.float64
TOL = 1e-10


class Recorded:
    """Pre-drawn standard normal tensors handed out in call order, logging each (sigma_a, sigma_b)."""

    def __init__(self, shape, seed, n=400):
        g = torch.Generator().manual_seed(seed)
        self.z = [torch.randn(shape, generator=g, dtype=F64) for _ in range(n)]
        self.log = []

    def __call__(self, sigma_a, sigma_b):
        self.log.append((float(sigma_a), float(sigma_b)))
        return self.z[len(self.log) - 1]


def setting(gmm, schedule, steps, final_zero):
    """(model, our grid, k-diffusion's sigmas, x_T): a Karras grid, with the data point appended when final_zero."""
    model = gmm(schedule)
    grid = make_grid("karras", model.schedule, steps)
    if final_zero:
        grid = torch.cat([grid, torch.zeros(1, dtype=F64)])
    a, s = model.schedule.alpha(grid), model.schedule.sigma(grid)
    sigmas = s / a
    x_T = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(3)) * float(s[0])
    return model, grid, sigmas, x_T


def k_model(model):
    """D(x~; sigma~) for k-diffusion: the same oracle through an uncounted Denoiser."""
    den, sched = Denoiser(model), model.schedule

    def D(x, sigma):
        t = sched.t_of_lambda(-torch.log(sigma[:1].to(F64)))[0]
        return den.x0(sched.alpha(t) * x, t)
    return D


CASES = [  # (our spec, k-diffusion function, its keyword arguments)
    ("euler-ancestral", "sample_euler_ancestral", {}),
    ("euler-ancestral:eta=0.5,s_noise=1.05", "sample_euler_ancestral", {"eta": 0.5, "s_noise": 1.05}),
    ("euler-ancestral:eta=0", "sample_euler_ancestral", {"eta": 0.0}),
    ("dpmpp-2s-ancestral", "sample_dpmpp_2s_ancestral", {}),
    ("dpmpp-2s-ancestral:eta=0.5,s_noise=1.05", "sample_dpmpp_2s_ancestral", {"eta": 0.5, "s_noise": 1.05}),
    ("dpmpp-2m-sde", "sample_dpmpp_2m_sde", {}),
    ("dpmpp-2m-sde:solver_type=heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp-2m-sde:eta=0.5,s_noise=1.05", "sample_dpmpp_2m_sde", {"eta": 0.5, "s_noise": 1.05}),
    ("dpmpp-2m-sde:eta=0", "sample_dpmpp_2m", {}),
    ("dpmpp-3m-sde", "sample_dpmpp_3m_sde", {}),
    ("dpmpp-3m-sde:eta=0.5,s_noise=1.05", "sample_dpmpp_3m_sde", {"eta": 0.5, "s_noise": 1.05}),
    ("dpmpp-sde", "sample_dpmpp_sde", {}),
    ("dpmpp-sde:r=0.3333333333333333", "sample_dpmpp_sde", {"r": 1 / 3}),
    ("dpmpp-sde:eta=0.5,s_noise=1.05", "sample_dpmpp_sde", {"eta": 0.5, "s_noise": 1.05}),
    ("lms", "sample_lms", {}),
    ("lms:order=2", "sample_lms", {"order": 2}),
    ("heun:churn=30,tmin=0.01,tmax=1,noise=1.007", "sample_heun",
     {"s_churn": 30.0, "s_tmin": 0.01, "s_tmax": 1.0, "s_noise": 1.007}),
    ("heun:churn=80,tmin=0.05,tmax=50,noise=1.003", "sample_heun",
     {"s_churn": 80.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
]


@pytest.mark.parametrize("final_zero", [True, False])
@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
@pytest.mark.parametrize("spec,fn,kw", CASES)
def test_matches_k_diffusion_with_the_same_noise(gmm, spec, fn, kw, schedule, final_zero):
    ks = k_sampling()
    model, grid, sigmas, x_T = setting(gmm, schedule, 9, final_zero)
    solver = get_solver(spec)
    ours_noise, ref_noise = Recorded(x_T.shape, 7), Recorded(x_T.shape, 7)
    den = Denoiser(model)
    plan = solver.plan_on(model.schedule, grid)
    if fn == "sample_heun":   # k-diffusion's heun draws from the global RNG: the same draws on both sides
        torch.manual_seed(11)
        ours = solver.sample(den, x_T, plan, generator=lambda a, b: torch.randn_like(x_T))
        torch.manual_seed(11)
    else:
        ours = solver.sample(den, x_T, plan, generator=ours_noise)
        if fn not in ("sample_lms", "sample_dpmpp_2m"):
            kw = {**kw, "noise_sampler": ref_noise}
    x0 = x_T / model.schedule.alpha(grid[0])
    calls = []
    D = k_model(model)
    ref = getattr(ks, fn)(lambda x, s: calls.append(1) or D(x, s), x0, sigmas, disable=True, **kw)
    ours = ours / model.schedule.alpha(grid[-1])
    assert (ours - ref).abs().max() <= TOL * max(1.0, float(ref.abs().max()))
    assert den.nfe == len(calls) == plan.nfe
    assert len(ours_noise.log) == len(ref_noise.log)
    for (a, b), (c, d) in zip(ours_noise.log, ref_noise.log):
        assert a == pytest.approx(c, rel=1e-12) and b == pytest.approx(d, rel=1e-12)


def test_euler_ancestral_is_ddim_with_eta(gmm):
    """DDIM's eta (its eq. 12) is k-diffusion's ancestral split: the same sampler on the same grid and noise."""
    for schedule in ("vp-linear", "vp-discrete"):
        model, grid, _, x_T = setting(gmm, schedule, 8, True)
        for eta in (1.0, 0.5):
            a = get_solver(f"euler-ancestral:eta={eta}").sample_on(Denoiser(model), x_T, grid,
                                                                   generator=torch.Generator().manual_seed(4))
            b = get_solver(f"ddim:eta={eta}").sample_on(Denoiser(model), x_T, grid,
                                                        generator=torch.Generator().manual_seed(4))
            assert (a - b).abs().max() <= 1e-12


def test_ipndm_is_lms_on_uniform_steps_and_ipndm_v_is_exact_to_order_2(gmm):
    """On a grid uniform in sigma~ (karras with rho = 1) the exact variable-step AB (lms) has iPNDM's constant
    coefficients; iPNDM-v's order-2 coefficients are the exact variable-step AB2 on any grid."""
    model = gmm("ve")
    x_T = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * 80.0
    uniform = make_grid("karras", model.schedule, 12, rho=1.0)
    karras = make_grid("karras", model.schedule, 12)
    for order in (2, 3, 4):
        a = get_solver(f"ipndm:order={order}").sample_on(Denoiser(model), x_T, uniform)
        b = get_solver(f"lms:order={order}").sample_on(Denoiser(model), x_T, uniform)
        assert (a - b).abs().max() <= 1e-10
    a = get_solver("ipndm-v:order=2").sample_on(Denoiser(model), x_T, karras)
    b = get_solver("lms:order=2").sample_on(Denoiser(model), x_T, karras)
    assert (a - b).abs().max() <= 1e-10
    c = get_solver("ipndm-v:order=4").sample_on(Denoiser(model), x_T, karras)
    d = get_solver("lms:order=4").sample_on(Denoiser(model), x_T, karras)
    assert (c - d).abs().max() > 1e-6, "iPNDM-v's order-4 coefficients are not the exact ones"


def test_churn_stays_below_the_top_of_the_schedule(gmm):
    """EDM's S_tmax = inf churns the first level above sigma~(T), where a VP network was never trained: the
    churned level is capped at sigma~(T), so the first step of a grid starting at T is not churned."""
    model, grid, _, x_T = setting(gmm, "vp-linear", 6, True)
    asked = []
    solver = get_solver("heun:churn=40")
    solver.sample_on(Denoiser(model), x_T, grid, generator=lambda a, b: asked.append((a, b)) or torch.zeros_like(x_T))
    top = float(model.schedule.sigma(grid[0]) / model.schedule.alpha(grid[0]))
    assert asked[0][1] == pytest.approx(top, rel=1e-12) and all(b <= top * (1 + 1e-12) for _, b in asked)
    assert asked[1][1] > asked[1][0], "later levels are churned"


@pytest.mark.parametrize("spec", ["euler-ancestral", "dpmpp-2s-ancestral", "dpmpp-2m-sde", "dpmpp-3m-sde",
                                  "dpmpp-sde", "lms", "ipndm", "ipndm-v", "heun:churn=40"])
def test_spends_at_most_its_budget_and_follows_its_plan(gmm, spec):
    model = gmm("vp-linear")
    solver = get_solver(spec)
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for nfe in range(solver.min_nfe, 13):
        plan = solver.plan(model.schedule, nfe)
        den = Denoiser(model, budget=nfe)
        x = solver.sample(den, x_T, plan, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(x).all() and den.nfe == plan.nfe <= nfe
        assert nfe - den.nfe <= 1, "at most one evaluation of a budget left unspent"


def test_two_stage_noise_is_one_brownian_path():
    """dpmpp-sde's two draws of a step, (sigma_i, sigma_s) then (sigma_i, sigma_{i+1}), are increments of one
    Brownian path: correlation sqrt((sigma_i - sigma_s) / (sigma_i - sigma_{i+1})), each standard normal."""
    x = torch.zeros(200_000, dtype=F64)
    ns = StepNoise(x, torch.Generator().manual_seed(0))
    z1, z2 = ns(2.0, 1.5), ns(2.0, 0.5)
    assert float(torch.corrcoef(torch.stack([z1, z2]))[0, 1]) == pytest.approx(math.sqrt(0.5 / 1.5), abs=0.01)
    assert float(z2.std()) == pytest.approx(1.0, abs=0.01)
    z3 = ns(0.5, 0.2)     # the next step: fresh, independent
    assert abs(float(torch.corrcoef(torch.stack([z2, z3]))[0, 1])) < 0.01


def _diff_sampler():
    """zju-pi/diff-sampler's diff-solvers-main/solvers.py (not on PyPI): the folder holding it in
    $NFEBENCH_DIFF_SAMPLER, e.g. from `git clone https://github.com/zju-pi/diff-sampler` (README, Tests)."""
    import importlib.util
    import os
    import sys
    where = os.environ.get("NFEBENCH_DIFF_SAMPLER")
    if not where or not os.path.isfile(os.path.join(where, "solvers.py")):
        pytest.skip("diff-sampler is not on PyPI: set NFEBENCH_DIFF_SAMPLER to its diff-solvers-main folder")
    if "diff_sampler_solvers" in sys.modules:
        return sys.modules["diff_sampler_solvers"]
    sys.path.insert(0, where)        # its `from solver_utils import *`
    try:               # under another name: nfebench's own package is `solvers`
        spec = importlib.util.spec_from_file_location("diff_sampler_solvers", os.path.join(where, "solvers.py"))
        module = sys.modules["diff_sampler_solvers"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(where)


@pytest.mark.parametrize("spec,fn,order", [("ipndm", "ipndm_sampler", 4), ("ipndm:order=3", "ipndm_sampler", 3),
                                           ("ipndm:order=2", "ipndm_sampler", 2), ("ipndm-v", "ipndm_v_sampler", 4),
                                           ("ipndm-v:order=3", "ipndm_v_sampler", 3)])
@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
def test_ipndm_matches_diff_sampler(gmm, spec, fn, order, schedule):
    ds = _diff_sampler()
    model, grid, sigmas, x_T = setting(gmm, schedule, 9, False)
    den = Denoiser(model)
    ours = get_solver(spec).sample_on(den, x_T, grid) / model.schedule.alpha(grid[-1])
    D, calls = k_model(model), []

    def net(x, t, class_labels=None):
        calls.append(1)
        return D(x, t.reshape(1))
    x0 = x_T / model.schedule.alpha(grid[0])
    ref = getattr(ds, fn)(net, x0 / sigmas[0], num_steps=len(sigmas), t_steps=sigmas, max_order=order)
    assert (ours - ref).abs().max() <= TOL * max(1.0, float(ref.abs().max()))
    assert den.nfe == len(calls) == len(grid) - 1


def test_brownian_tree_is_one_path_whatever_the_queries():
    """noise_path=tree: W(sigma) of a sample depends on its seed and row only, not on the grid that queries it, its
    batch or the order of the queries; increments over disjoint intervals are independent standard normals."""
    from solvers.noise import NoiseStream
    from solvers.noise_sampler import BrownianTree
    x = torch.zeros(20_000, 2, dtype=F64)
    coarse, fine = BrownianTree(x, NoiseStream(3), 100.0), BrownianTree(x, NoiseStream(3), 100.0)
    grid_c, grid_f = [100.0, 40.0, 1.0], [100.0, 70.0, 40.0, 10.0, 1.0]
    w_c = sum(coarse(a, b) * math.sqrt(a - b) for a, b in zip(grid_c, grid_c[1:]))
    w_f = sum(fine(a, b) * math.sqrt(a - b) for a, b in zip(grid_f, grid_f[1:]))
    assert (w_c - w_f).abs().max() <= 1e-9                        # W(1) - W(100), two grids
    z1, z2 = coarse(100.0, 40.0), coarse(40.0, 1.0)
    assert float(z1.std()) == pytest.approx(1.0, abs=0.02) and float(z2.std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float((z1 * z2).mean())) < 0.02
    part = BrownianTree(x[700:705], NoiseStream(3, start=700), 100.0)   # rows 700..704 in another batch
    assert torch.equal(part(70.0, 10.0), fine(70.0, 10.0)[700:705])


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["dpmpp-2m-sde", "euler-ancestral"])
def test_sde_strong_error_falls_with_nfe_on_one_brownian_path(gmm, spec):
    """A stochastic sampler on one Brownian path per sample (noise_path=tree) converges strongly to its own
    fine-step solution on that path: measured slopes 0.73 (dpmpp-2m-sde) and 0.55 (euler-ancestral) over NFE
    10..160 against NFE 2560 (docs/solvers.md#stochastic)."""
    from solvers.noise import NoiseStream
    model = gmm("vp-linear")
    x_T = torch.randn(128, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * float(
        model.schedule.sigma(model.schedule.T))
    solver = get_solver(spec + ":noise_path=tree")

    def run(nfe):
        return solver.sample(Denoiser(model), x_T, solver.plan(model.schedule, nfe), generator=NoiseStream(5))
    fine = run(1280)
    nfes = [10, 40, 160]
    errs = [float(((run(k) - fine) ** 2).sum(1).mean().sqrt()) for k in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert errs[0] > errs[1] > errs[2] and slope > 0.35, (errs, slope)
