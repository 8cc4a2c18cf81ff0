"""The multistep core's hooks (solvers/multistep.py): modifiers combine with any base that offers their hook.

The two combinations the core made possible, `unipc+ts` (time shift on UniPC) and `dpmpp-3m+dc` (DC-Solver's
compensation on DPM-Solver++(3M)), reduce to their base bit for bit with the modifier off; with it on they differ,
spend the same NFE, and keep the per-sample property of their modifier.
"""
import pytest
import torch

import models
from solvers import Denoiser, get_solver
from solvers.dc_solver import DynamicCompensation
from solvers.multistep import History, Multistep
from solvers.pndm import PseudoLinearMultistep
from solvers.time_shift import TimeShift
from solvers.unipc import UniPC

F64 = torch.float64


def _noise(n, shape=(2,), seed=0):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.fixture(scope="module")
def gmm():
    return models.load_model("gmm2d", dtype=F64)


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits", dtype=F64)   # float64: a batch's size does not move the network's rounding


def _run(spec, model, nfe, x_T, y=None, guidance=1.0):
    solver = get_solver(spec)
    plan = solver.plan(model.schedule, nfe)
    d = Denoiser(model, y=y, guidance=guidance, budget=nfe)
    with torch.no_grad():
        x = solver.sample(d, x_T, plan)
    assert d.nfe == plan.nfe
    return x


@pytest.mark.parametrize("base,off,on", [
    ("unipc", "unipc+ts:window=0", "unipc+ts:cutoff=0,window=40"),
    ("unipc:order=2,variant=bh2", "unipc+ts:order=2,variant=bh2,window=0", "unipc+ts:cutoff=0,order=2,variant=bh2"),
    ("unipc:corrector=false", "unipc+ts:corrector=false,window=0", "unipc+ts:corrector=false,cutoff=0"),
    ("dpmpp-3m", "dpmpp-3m+dc:ratio=1.0", "dpmpp-3m+dc:ratio=1.1"),
    ("dpmpp-3m:lower_order_final=false", "dpmpp-3m+dc:lower_order_final=false,ratio=1.0",
     "dpmpp-3m+dc:lower_order_final=false,ratio=0.9"),
])
@pytest.mark.parametrize("grid", ["", "karras", "linspace"])
@pytest.mark.parametrize("nfe", [4, 7, 12])
def test_modifier_off_is_the_base_bit_for_bit(gmm, base, off, on, grid, nfe):
    sep = lambda s: s + ("," if ":" in s else ":") + f"grid={grid}" if grid else s   # noqa: E731
    x_T = _noise(64) * float(gmm.schedule.sigma(gmm.schedule.T))
    ref = _run(sep(base), gmm, nfe, x_T)
    assert torch.equal(_run(sep(off), gmm, nfe, x_T), ref)
    changed = _run(sep(on), gmm, nfe, x_T)
    assert torch.isfinite(changed).all()
    if nfe > 3:   # a modifier acts from the third evaluation (DC) or the second state (time shift)
        assert not torch.equal(changed, ref)


def test_unipc_ts_on_a_conditional_image_model_is_per_sample(digits):
    """The shifted time is chosen per sample from its own variance: a sample's result does not depend on its
    batch, and guidance passes through."""
    y = torch.arange(16) % 10
    x_T = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=F64) * \
        float(digits.schedule.sigma(digits.schedule.T))
    spec = "unipc+ts:cutoff=0,window=40"
    full = _run(spec, digits, 8, x_T, y, 3.0)
    part = _run(spec, digits, 8, x_T[:5], y[:5], 3.0)
    assert torch.allclose(full[:5], part, rtol=0, atol=1e-10)
    assert not torch.equal(full, _run("unipc", digits, 8, x_T, y, 3.0))


def test_unipc_ts_moves_the_evaluated_times(gmm):
    """With the shift on, the network sees per-sample times other than the grid's."""
    seen = []

    class Spy(Denoiser):
        def predict(self, x, t):
            seen.append(torch.as_tensor(t, dtype=F64).reshape(-1))
            return super().predict(x, t)

    solver = get_solver("unipc+ts:cutoff=0,window=60")
    plan = solver.plan(gmm.schedule, 8)
    x_T = _noise(32) * float(gmm.schedule.sigma(gmm.schedule.T))
    with torch.no_grad():
        solver.sample(Spy(gmm, budget=8), x_T, plan)
    assert len(seen) == 8
    grid = set(plan.grid.tolist())
    moved = [t for t in seen[1:] if t.numel() > 1 or float(t) not in grid]
    assert moved, "no evaluation at a shifted time"


def test_dc_on_3m_compensates_with_three_entries(gmm):
    """DC acts only once the history holds 3 evaluations: ratios before that are ignored, as for unipc+dc."""
    solver = get_solver("dpmpp-3m+dc")
    plan = solver.plan(gmm.schedule, 6)
    x_T = _noise(16) * float(gmm.schedule.sigma(gmm.schedule.T))
    base = get_solver("dpmpp-3m").sample(Denoiser(gmm), x_T, plan)
    with pytest.raises(Exception, match="first 2 compensation ratios must be 1"):
        solver.with_ratios([1.2] + [1.0] * 5).sample(Denoiser(gmm), x_T, plan)
    assert torch.equal(solver.with_ratios([1.0] * 6).sample(Denoiser(gmm), x_T, plan), base)
    assert not torch.equal(solver.with_ratios([1.0, 1.0, 1.3, 1.0, 1.0, 1.0]).sample(Denoiser(gmm), x_T, plan), base)


def test_a_modifier_needs_a_base_offering_its_hook():
    """PNDM's eps history offers no adjust_history hook (DC interpolates data predictions): refused when the
    class is defined, naming the hook."""
    with pytest.raises(TypeError, match="adjust_history"):
        type("PNDMDC", (DynamicCompensation, PseudoLinearMultistep), {})
    assert issubclass(type("UniPCTS", (TimeShift, UniPC), {}), Multistep)   # UniPC offers model_time


def test_history_push_keeps_the_newest():
    h = History([0], [0.0], ["a"]).push(1, 1.0, "b", keep=2).push(2, 2.0, "c", keep=2)
    assert (h.ts, h.Ms) == ([1, 2], ["b", "c"]) and h.with_newest("C").Ms == ["b", "C"]
