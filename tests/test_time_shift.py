"""Time-Shift samplers (ddim+ts, pndm+ts, dpm-solver+ts): the selection rule, reductions to the base samplers,
per-sample times through the Denoiser on every schedule and model, NFE and options."""
import pytest
import torch

import models
from solvers import Denoiser, NFEBudgetExceeded, SpecError, get_solver, make_grid
from solvers.denoiser import Network
from solvers.exponential import Interval, noise_step
from solvers.time_shift import shifted_time

F64 = torch.float64
TOL = 1e-12
SCHEDULES = ["vp-discrete", "vp-linear", "vp-cosine", "ve"]


def noise(n, seed=0, scale=1.0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def gmm():
    cache = {}

    def get(schedule="vp-discrete", prediction="x0"):
        if (schedule, prediction) not in cache:
            cache[schedule, prediction] = models.load_model(f"gmm2d:schedule={schedule},prediction={prediction}",
                                                            dtype=F64)
        return cache[schedule, prediction]
    return get


class Recording(Network):
    """Wraps a model and records the (per-sample) times of every network call."""

    def __init__(self, model):
        self.model, self.times = model, []
        self.schedule, self.prediction, self.num_classes = model.schedule, model.prediction, model.num_classes

    def forward(self, x, t, y=None):
        self.times.append(t.clone())
        return self.model.forward(x, t, y)


# --- the selection rule ----------------------------------------------------------------------------------
def test_selection_matches_a_brute_force_search_of_the_training_table(gmm):
    sched = gmm("vp-discrete").schedule
    abar = sched.alphas_cumprod
    t = sched.t_of_step(500)
    var = torch.linspace(float(1 - abar[476]), float(1 - abar[524]), 40, dtype=F64)
    x = torch.stack([torch.full((40,), 0.0, dtype=F64), torch.zeros(40, dtype=F64)], 1)
    x[:, 1] = (2 * var).sqrt()        # unbiased variance of (0, a) is a^2 / 2
    s = shifted_time(sched, x, t, sched.t_of_step(300), window=40, cutoff=300)
    ks = torch.arange(480, 521)
    best = ks[torch.argmin((var[:, None] - (1 - abar[ks])[None, :]) ** 2, dim=1)]
    assert torch.allclose(s, sched.t_of_step(best.to(F64)), atol=1e-15, rtol=0)
    assert len(set(best.tolist())) > 10 and best.min() == 480 and best.max() == 520   # both window edges used
    # below the cutoff, with window 0 or 1 (no neighbour), the nominal time itself
    assert s.shape == (40,)
    assert shifted_time(sched, x, t, 0.0, window=40, cutoff=500) is t
    assert shifted_time(sched, x, t, 0.0, window=1, cutoff=300) is t
    # candidates stay in the training range and strictly above the next grid time
    s = shifted_time(sched, x, sched.t_of_step(990), sched.t_of_step(985), window=40, cutoff=300)
    steps = sched.model_time(s).round()
    assert steps.min() >= 986 and steps.max() <= 999


def test_continuous_schedules_use_virtual_steps_of_T_over_1000(gmm):
    for name in ("vp-linear", "vp-cosine", "ve"):
        sched = gmm(name).schedule
        t = torch.tensor(0.6 * sched.T, dtype=F64)
        x = torch.randn(64, 500, dtype=F64, generator=torch.Generator().manual_seed(1)) * sched.sigma(t)
        s = shifted_time(sched, x, t, torch.tensor(0.4 * sched.T, dtype=F64), window=20, cutoff=300)
        j = (s - t) / (sched.T / 1000)
        assert torch.allclose(j, j.round(), atol=1e-9) and j.abs().max() <= 10 + 1e-9
        cand = t + torch.arange(-10, 11, dtype=F64) * sched.T / 1000
        var = x.var(dim=1)
        best = cand[torch.argmin((var[:, None] - sched.sigma(cand)[None, :] ** 2) ** 2, dim=1)]
        assert torch.allclose(s, best, atol=1e-15, rtol=0), name


# --- reductions ------------------------------------------------------------------------------------------
PAIRS = [("ddim+ts", "ddim"), ("pndm+ts", "s-pndm"), ("pndm+ts:variant=f-pndm", "f-pndm"),
         ("dpm-solver+ts", "dpmpp-2m"), ("dpm-solver+ts:order=3", "dpmpp-3m")]


@pytest.mark.parametrize("ts,base", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_no_shift_is_the_base_sampler(gmm, ts, base, schedule):
    model = gmm(schedule)
    xT = noise(64, 2, float(model.schedule.sigma(model.schedule.T)))
    grids = [make_grid("time_uniform", model.schedule, 16), make_grid("logSNR", model.schedule, 15)]
    if schedule == "vp-discrete":
        grids.append(make_grid("leading", model.schedule, 20))
    sep = "," if ":" in ts else ":"
    for g in grids:
        ref = get_solver(base).sample_on(Denoiser(model), xT, g)
        for off in ("window=0", "cutoff=1000"):
            x = get_solver(ts + sep + off).sample_on(Denoiser(model), xT, g)
            assert (x - ref).abs().max() <= TOL, (off, g[:3])
        shifted = get_solver(ts).sample_on(Denoiser(model), xT, g)
        assert (shifted - ref).abs().max() > 1e-6, "the default window should shift something"


# --- the sampler loop ------------------------------------------------------------------------------------
def test_ddim_ts_by_hand(gmm):
    """Alg. 3: the model sees the shifted time s, and s is the source time of the next DDIM transfer."""
    model = gmm("vp-discrete", "eps")
    sched, den = model.schedule, Denoiser(model)
    g = make_grid("leading", sched, 4)          # steps 750, 500, 250, 0, then t = 0
    xT = noise(32, 3)
    x, s = xT, g[0]
    for i in range(4):
        x = noise_step(Interval(sched, s, g[i + 1]), x, den.eps(x, s))
        if i < 3:
            s = shifted_time(sched, x, g[i + 1], g[i + 2], 30, 300)
    out = get_solver("ddim+ts").sample_on(Denoiser(model), xT, g)
    assert (out - x).abs().max() <= TOL


@pytest.mark.parametrize("spec", ["ddim+ts", "pndm+ts", "pndm+ts:variant=f-pndm", "dpm-solver+ts"])
def test_per_sample_times_reach_the_model(gmm, spec):
    rec = Recording(gmm("vp-discrete", "eps"))
    s = get_solver(spec + (",grid=leading" if ":" in spec else ":grid=leading"))
    nfe = 20
    den = Denoiser(rec, budget=nfe)
    s.sample_on(den, noise(64, 4), s.plan(rec.schedule, nfe))
    assert den.nfe == nfe == len(rec.times)
    steps = [rec.schedule.model_time(t) for t in rec.times]
    varied = [st for st in steps if st.unique().numel() > 1]
    assert varied, "no per-sample shift happened"
    g = s.plan(rec.schedule, nfe).grid
    nominal = rec.schedule.model_time(torch.cat([g[:-1], (g[:-1] + g[1:]) / 2]))   # grid and pseudo-RK mid times
    for st in varied:   # each shifted call lies within w // 2 = 15 steps of a nominal time
        near = (st[:, None] - nominal[None, :]).abs().min(dim=1).values
        assert near.max() <= 15 + 1e-9


@pytest.mark.parametrize("spec", ["ddim+ts", "pndm+ts", "dpm-solver+ts"])
def test_selection_is_per_sample(gmm, spec):
    model = gmm("vp-linear")
    xT = noise(64, 5)
    s = get_solver(spec)
    g = s.plan(model.schedule, 12)
    assert torch.equal(s.sample_on(Denoiser(model), xT, g)[:16], s.sample_on(Denoiser(model), xT[:16], g))


def test_digits_network_with_guidance():
    """A real network (the digits MLP, float32) with classifier-free guidance takes the per-sample times."""
    model = models.load_model("digits")
    xT = torch.randn(8, *model.shape, generator=torch.Generator().manual_seed(0))
    for spec in ("ddim+ts", "pndm+ts", "dpm-solver+ts"):
        s = get_solver(spec)
        den = Denoiser(model, y=torch.arange(8) % 10, guidance=3.0, budget=10)
        x = s.sample_on(den, xT, s.plan(model.schedule, 10))
        assert den.nfe == 10 and x.dtype == torch.float32 and torch.isfinite(x).all()
        ref = get_solver(spec + ":window=0").sample_on(Denoiser(model, y=torch.arange(8) % 10, guidance=3.0), xT,
                                                     s.plan(model.schedule, 10))
        assert (x - ref).abs().max() > 1e-4, spec


# --- NFE and options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,min_nfe", [("ddim+ts", 1), ("pndm+ts", 3), ("pndm+ts:variant=f-pndm", 13),
                                          ("dpm-solver+ts", 1)])
@pytest.mark.parametrize("schedule,prediction", [("vp-discrete", "eps"), ("vp-linear", "x0"), ("ve", "v")])
def test_budget_is_spent_exactly(gmm, spec, min_nfe, schedule, prediction):
    model = gmm(schedule, prediction)
    s = get_solver(spec)
    assert s.min_nfe == min_nfe
    xT = noise(8, 6, float(model.schedule.sigma(model.schedule.T)))
    for nfe in range(min_nfe, 51 if schedule == "vp-discrete" else min_nfe + 10):
        den = Denoiser(model, budget=nfe)
        assert torch.isfinite(s.sample_on(den, xT, s.plan(model.schedule, nfe))).all()
        assert den.nfe == nfe
    with pytest.raises(NFEBudgetExceeded):
        s.sample_on(Denoiser(model, budget=min_nfe + 2), xT, s.plan(model.schedule, min_nfe + 3))


def test_defaults():
    for name in ("ddim+ts", "pndm+ts", "dpm-solver+ts"):
        s = get_solver(name)
        assert (s.window, s.cutoff) == (30, 300)
    assert get_solver("pndm+ts").variant == "s-pndm" and get_solver("dpm-solver+ts").order == 2


@pytest.mark.parametrize("spec,pattern", [
    ("ddim+ts:window=-2", r"window=-2 for solver 'ddim\+ts' not accepted: need window >= 0"),
    ("ddim+ts:window=3.5", r"window=3.5 .* expected int"),
    ("pndm+ts:variant=plms", r"variant=plms .* choose one of: s-pndm, f-pndm"),
    ("dpm-solver+ts:order=1", r"order=1 .* choose one of: 2, 3"),
    ("ddim+ts:eta=1", r"unknown option 'eta' for solver 'ddim\+ts'"),
])
def test_bad_options(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)
