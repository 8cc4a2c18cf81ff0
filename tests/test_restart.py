"""Restart sampling (solvers/restart.py) against the authors' `restart_sampler` (float64, exact gmm2d oracle, the
same injected noise), its NFE and noise bookkeeping, the snapping of t_min to the grid, and its plans
(docs/solvers.md#restart)."""
import ast
import json
import math
import os
import types

import numpy as np
import pytest
import torch

import solvers.restart  # noqa: F401  (registers `restart`)
from solvers import Denoiser, SpecError, get_solver, make_grid
from solvers.plan import BelowMinimumNFE, PlanError
from solvers.restart import inner_grid, sigmas_of

F64 = torch.float64
TOL = 1e-8

CIFAR = {"0": [3, 2, 0.06, 0.30]}                     # params_cifar10_vp.txt, N = 18: NFE 43
IMAGENET = {"0": [4, 1, 19.35, 40.79], "1": [4, 1, 1.09, 1.92], "2": [4, 5, 0.59, 1.09],
            "3": [4, 5, 0.30, 0.59], "4": [6, 6, 0.06, 0.30]}   # params_imagenet_edm.txt, N = 36: NFE 203


def spec_of(info, **opts):
    """Our spec for a restart_info dict (in its key order)."""
    items = "/".join(f"{n}x{K}@{lo}-{hi}" for n, K, lo, hi in info.values())
    return "restart:" + ",".join([f"intervals={items}", *(f"{k}={v}" for k, v in opts.items())])


class Recorded:
    """Pre-drawn standard normal tensors handed out in call order; ours logs (sigma_a, sigma_b), the reference's
    `randn_like(x)` takes x."""

    def __init__(self, shape, seed, n=400):
        g = torch.Generator().manual_seed(seed)
        self.z = [torch.randn(shape, generator=g, dtype=F64) for _ in range(n)]
        self.log = []

    def __call__(self, a, b):
        self.log.append((float(a), float(b)))
        return self.z[len(self.log) - 1]

    def like(self, x):
        self.log.append(None)
        return self.z[len(self.log) - 1]


def _restart_sampler():
    """The authors' `restart_sampler` (Newbeeer/diffusion_restart_sampling, benchmarks/generate_restart.py; not on
    PyPI), from the folder in $NFEBENCH_RESTART. Its module imports their training stack (dnnlib, torch_utils,
    click), so only this function is taken out of the file's syntax tree and compiled, with torch, numpy and a
    silent `dist.print0`."""
    where = os.environ.get("NFEBENCH_RESTART")
    path = os.path.join(where or "", "generate_restart.py")
    if not where or not os.path.isfile(path):
        pytest.skip("Restart's reference is not on PyPI: set NFEBENCH_RESTART to the benchmarks/ folder of "
                    "https://github.com/Newbeeer/diffusion_restart_sampling")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "restart_sampler")
    namespace = {"torch": torch, "np": np, "math": math,
                 "dist": types.SimpleNamespace(print0=lambda *a, **k: None)}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), namespace)
    return namespace["restart_sampler"]


class Net:
    """EDM's network interface over the gmm2d oracle: D(x~; sigma~) through an uncounted Denoiser."""

    img_channels, img_resolution, sigma_min, sigma_max = 1, 2, 0.0, math.inf

    def __init__(self, model):
        self.den, self.schedule, self.calls = Denoiser(model), model.schedule, 0

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        t = self.schedule.t_of_lambda(-torch.log(torch.as_tensor(sigma).to(F64)))
        return self.den.x0(self.schedule.alpha(t) * x, t)


def edm_setting(gmm, schedule, steps):
    """(model, our grid: EDM's `steps` Karras levels in sigma~ and sigma = 0, the reference's sigma_min/max)."""
    model = gmm(schedule)
    grid = torch.cat([make_grid("karras", model.schedule, steps - 1), torch.zeros(1, dtype=F64)])
    a, s = model.schedule.alpha(grid[:-1]), model.schedule.sigma(grid[:-1])
    return model, grid, float(s[-1] / a[-1]), float(s[0] / a[0])


CONFIGS = {  # name: (restart_info, main levels N, our options, the reference's options)
    "cifar": (CIFAR, 18, {}, {}),
    "imagenet": (IMAGENET, 36, {"s_noise": 1.003}, {"S_noise": 1.003}),
    "cifar-churn": (CIFAR, 12, {"churn": 10, "restart_gamma": 0.1, "smin": 0.05, "smax": 2},
                    {"S_churn": 10.0, "restart_gamma": 0.1, "S_min": 0.05, "S_max": 2.0}),
}


@pytest.mark.parametrize("schedule", ["ve", "vp-linear"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_restart_sampler_with_the_same_noise(gmm, schedule, config):
    ref_fn = _restart_sampler()
    info, N, opts, ref_opts = CONFIGS[config]
    model, grid, s_min, s_max = edm_setting(gmm, schedule, N)
    solver = get_solver(spec_of(info, **opts))
    z = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    x_T = z * float(model.schedule.sigma(grid[0]))            # x~_0 = sigma~_0 z, the reference's start
    ours_noise, ref_noise = Recorded(z.shape, 7), Recorded(z.shape, 7)
    den = Denoiser(model)
    plan = solver.plan_on(model.schedule, grid)
    ours = solver.sample(den, x_T, plan, generator=ours_noise) / model.schedule.alpha(grid[-1])
    net = Net(model)
    ref = ref_fn(net, z, randn_like=ref_noise.like, num_steps=N, sigma_min=s_min, sigma_max=s_max, rho=7,
                 restart_info=json.dumps(info), **{"S_min": 0.01, "S_max": 1.0, "S_noise": 1.0,
                                                   "restart_gamma": 0.05, **ref_opts})
    diff = float((ours - ref).abs().max())
    print(f"{config} {schedule}: max abs diff {diff:.3g}, NFE {den.nfe}, draws {len(ours_noise.log)}")
    assert diff <= TOL * max(1.0, float(ref.abs().max()))
    restart_nfe = sum(2 * K * (n - 1) for n, K, _, _ in info.values())
    assert den.nfe == net.calls == plan.nfe == 2 * N - 1 + restart_nfe
    assert len(ours_noise.log) == len(ref_noise.log) == N + sum(K * n for n, K, _, _ in info.values())


def test_nfe_and_draws_of_the_published_configs(gmm):
    """NFE = (2N - 1) + sum 2 K (n - 1) on EDM's grid (43 and 203, as hyperparam.py counts); draws: one a main
    step, and per restart one jump and n - 1 churn draws (24 for CIFAR-10 at N = 18: 18 + 2 (1 + 2))."""
    for info, N, nfe, draws in ((CIFAR, 18, 43, 24), (IMAGENET, 36, 203, 120)):
        model, grid, _, _ = edm_setting(gmm, "ve", N)
        solver = get_solver(spec_of(info))
        plan = solver.plan_on(model.schedule, grid)
        noise = Recorded((8, 2), 0)
        den = Denoiser(model, budget=nfe)
        x = solver.sample(den, torch.randn(8, 2, dtype=F64) * 80, plan, generator=noise)
        assert torch.isfinite(x).all()
        assert plan.nfe == den.nfe == nfe and len(noise.log) == draws
        assert sum(plan.evals) == nfe and solver.restart_nfe == nfe - (2 * N - 1)


def test_t_min_snaps_to_the_nearest_main_level(gmm):
    """The spec's test vectors (EDM VE grid, sigma in [0.002, 80]): the restart runs from the main level nearest
    t_min, on a float32 inner grid from t_max down to that level."""
    model, grid, _, _ = edm_setting(gmm, "ve", 18)
    sbar = grid.tolist()
    cifar = get_solver(spec_of(CIFAR))
    assert list(cifar.attached(sbar)) == [14] and sbar[14] == pytest.approx(0.05995, abs=1e-5)
    assert inner_grid(sbar[14], 0.30, 3, 7.0) == pytest.approx([0.3, 0.14045, 0.05995], abs=1e-5)
    assert all(float(torch.tensor(s, dtype=torch.float32)) == s for s in inner_grid(sbar[14], 0.30, 3, 7.0))
    model, grid, _, _ = edm_setting(gmm, "ve", 36)
    sbar = grid.tolist()
    attached = get_solver(spec_of(IMAGENET)).attached(sbar)
    assert sorted(attached) == [8, 21, 23, 25, 29]
    assert [sbar[i] for i in sorted(attached)] == pytest.approx([20.239, 0.96542, 0.52331, 0.26748, 0.05548],
                                                                rel=1e-4)
    assert inner_grid(sbar[8], 40.79, 4, 7.0) == pytest.approx([40.79, 32.542, 25.767, 20.239], rel=1e-4)
    # the plan puts each restart's cost on the main step it follows
    evals = cifar.plan_on(model.schedule, edm_setting(gmm, "ve", 18)[1]).evals
    assert evals[13] == 2 + 8 and evals[-1] == 1 and set(evals[:13] + evals[14:-1]) == {2}


def test_intervals_option_and_defaults():
    s = get_solver("restart")
    assert s.spec == "restart" and s.s_noise == 1.0 and s.restart_gamma == 0.05
    assert (s.smin, s.smax, s.churn) == (0.01, 1.0, 0.0) and s.min_nfe == 8 + 2
    assert get_solver("restart:intervals=3x2@0.060-0.30").spec == "restart"          # one spelling
    im = get_solver(spec_of(IMAGENET))
    assert im.spec == "restart:intervals=4x1@19.35-40.79/4x1@1.09-1.92/4x5@0.59-1.09/4x5@0.3-0.59/6x6@0.06-0.3"
    assert get_solver(im.spec).spec == im.spec and im.restart_nfe == 203 - 71
    assert get_solver("restart:intervals=3x1@5e-4-1e-2").restarts[0].t_min == 5e-4
    for bad in ("3x2@0.3-0.06", "1x2@0.06-0.3", "3x2", "3x2@0.06", "3x2@nan-1", "x2@0.1-0.2", "3x2@0.06-0.3/"):
        with pytest.raises(SpecError) as e:
            get_solver(f"restart:intervals={bad}")
        msg = str(e.value)
        assert "\n" not in msg and ("intervals=" in msg or "n >= 2" in msg)
    with pytest.raises(SpecError, match="smin"):
        get_solver("restart:smin=2,smax=1")


def test_an_over_small_budget_is_one_clear_line(gmm):
    model = gmm("vp-linear")
    for spec, least in (("restart", 10), (spec_of(IMAGENET), 134)):
        solver = get_solver(spec)
        with pytest.raises(BelowMinimumNFE) as e:
            solver.plan(model.schedule, least - 1)
        assert isinstance(e.value, SpecError) and e.value.min_nfe == least
        assert str(e.value) == f"NFE {least - 1} is below the minimum for solver 'restart': {least}"
        solver.plan(model.schedule, least)
    with pytest.raises(PlanError, match="top sigma"):     # t_max above the VE model's sigma~(T) = 80
        get_solver("restart:intervals=3x2@50-90").plan(gmm("ve").schedule, 20)


TWO = "restart:intervals=2x1@0.5-2/3x1@0.06-0.3"


@pytest.mark.parametrize("spec,schedule,grid,tight", [
    ("restart", "vp-linear", None, True), ("restart", "ve", None, True), ("restart", "vp-discrete", "trailing", True),
    (TWO, "vp-linear", None, True), (TWO, "vp-discrete", "trailing", False)])
def test_spends_at_most_its_budget_and_follows_its_plan(gmm, spec, schedule, grid, tight):
    """Never above the budget; at most one NFE short, except where a restart attached to sigma~ = 0 (a coarse
    grid ending at the data point) costs less than its share and no finer main grid keeps it there."""
    model = gmm(schedule)
    solver = get_solver(spec + ("," if ":" in spec else ":") + f"grid={grid}" if grid else spec)
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for nfe in range(solver.min_nfe, solver.min_nfe + 13):
        plan = solver.plan(model.schedule, nfe)
        den = Denoiser(model, budget=nfe)
        x = solver.sample(den, x_T, plan, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(x).all() and den.nfe == plan.nfe == sum(plan.evals) <= nfe
        sbar = sigmas_of(model.schedule, plan.grid)
        at_data = any(sbar[i] == 0 for i in solver.attached(sbar))
        if tight or not at_data:
            assert nfe - den.nfe <= 1, f"{nfe}: at most one evaluation of a budget left unspent, {plan}"


def test_without_restarts_it_is_edm_churn(gmm):
    """K = 0 restarts leaves EDM's Alg. 2 main loop: `heun` with the same churn and the same draws."""
    model = gmm("vp-linear")
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for churn in (0, 20):
        ours = get_solver(f"restart:intervals=3x0@0.06-0.3,churn={churn},smin=0.05,smax=5,s_noise=1.007")
        heun = get_solver(f"heun:churn={churn},tmin=0.05,tmax=5,noise=1.007" if churn else "heun")
        for nfe in (9, 10):
            a = ours.sample(Denoiser(model), x_T, ours.plan(model.schedule, nfe),
                            generator=torch.Generator().manual_seed(1))
            b = heun.sample(Denoiser(model), x_T, heun.plan(model.schedule, nfe),
                            generator=torch.Generator().manual_seed(1))
            assert ours.plan(model.schedule, nfe).evals == heun.plan(model.schedule, nfe).evals
            assert (a - b).abs().max() <= 1e-12   # at churn 0 restart draws (times 0) where heun draws nothing
