"""The counting Denoiser: prediction types, classifier-free guidance, per-sample times, budgets."""
import pytest
import torch

from solvers import Denoiser, NFEBudgetExceeded, VPLinear
from solvers.denoiser import Network

F64 = torch.float64


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-discrete", "vp-cosine", "ve"])
def test_prediction_types_agree(gmm, x_T, schedule):
    """gmm2d predicting x0, eps or v is one model: the Denoiser gives the same x0 and eps for all three."""
    model = gmm(schedule)
    s = model.schedule
    x = x_T(32, seed=0, scale=2.0)
    for t in (s.t_min, 0.5 * (s.t_min + s.T), s.T):
        ref = Denoiser(gmm(schedule, "x0")).predict(x * float(s.sigma(t) + s.alpha(t)), t)
        for kind in ("eps", "v"):
            p = Denoiser(gmm(schedule, kind)).predict(x * float(s.sigma(t) + s.alpha(t)), t)
            assert (p.x0 - ref.x0).abs().max() <= 1e-12, (kind, t)
            assert (p.eps - ref.eps).abs().max() <= 1e-12, (kind, t)
        # x = alpha x0 + sigma eps
        xt = x * float(s.sigma(t) + s.alpha(t))
        assert (s.alpha(t) * ref.x0 + s.sigma(t) * ref.eps - xt).abs().max() <= 1e-12


class FakeConditional(Network):
    """Class-conditional eps model: 3 classes, label 3 is the null (unconditional) label."""
    schedule = VPLinear()
    prediction = "eps"
    num_classes = 3

    def __init__(self):
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((x.shape[0], None if y is None else y.clone()))
        assert t.shape == (x.shape[0],) and (y is None or y.shape == (x.shape[0],))
        w = torch.ones(x.shape[0], dtype=x.dtype) if y is None else (y.to(x.dtype) + 1.0)
        return torch.sin(x * w[:, None]) + t[:, None] * w[:, None]


def test_guidance_is_one_batched_nfe():
    model = FakeConditional()
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    t = 0.4
    tv = torch.full((5,), t, dtype=F64)
    e_c = model.forward(x, tv, y)
    e_u = model.forward(x, tv, torch.full((5,), 3))
    model.calls.clear()
    den = Denoiser(model, y=y, guidance=4.0)
    p = den.predict(x, t)
    assert den.nfe == 1
    assert len(model.calls) == 1 and model.calls[0][0] == 10                    # both passes in one batch
    assert torch.equal(model.calls[0][1], torch.cat([y, torch.full((5,), 3)]))  # conditional, then null label
    assert (p.eps - (e_u + 4.0 * (e_c - e_u))).abs().max() <= 1e-14
    a, s = model.schedule.alpha(t), model.schedule.sigma(t)
    assert (p.x0 - (x - s * p.eps) / a).abs().max() <= 1e-14
    # guidance 1 is the plain conditional model, one pass of the batch
    model.calls.clear()
    den1 = Denoiser(model, y=y, guidance=1.0)
    assert (den1.eps(x, t) - e_c).abs().max() == 0
    assert den1.nfe == 1 and len(model.calls) == 1 and model.calls[0][0] == 5
    # one label for the whole batch
    d = Denoiser(model, y=2, guidance=3.0).eps(x, t)
    e2 = model.forward(x, tv, torch.full((5,), 2))
    assert (d - (e_u + 3.0 * (e2 - e_u))).abs().max() <= 1e-14


def test_guidance_needs_a_conditional_model(gmm):
    with pytest.raises(ValueError, match="class-conditional"):
        Denoiser(gmm("vp-linear"), y=torch.zeros(4, dtype=torch.long), guidance=2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        Denoiser(FakeConditional(), y=None, guidance=2.0)


def test_per_sample_times(gmm, x_T):
    model = gmm("vp-linear")
    x = x_T(6, seed=1)
    t = torch.tensor([1e-3, 0.05, 0.2, 0.5, 0.8, 1.0], dtype=F64)
    den = Denoiser(model)
    p = den.predict(x, t)
    assert den.nfe == 1
    for i in range(6):
        q = Denoiser(model).predict(x[i:i + 1], t[i])
        assert (p.x0[i] - q.x0[0]).abs().max() <= 1e-14 and (p.eps[i] - q.eps[0]).abs().max() <= 1e-14
    # guided, per-sample times
    fake = FakeConditional()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    g = Denoiser(fake, y=y, guidance=2.0).eps(x, t)
    for i in range(6):
        gi = Denoiser(fake, y=y[i:i + 1], guidance=2.0).eps(x[i:i + 1], t[i])
        assert (g[i] - gi[0]).abs().max() <= 1e-14


def test_budget_counts_and_raises_before_the_call():
    model = FakeConditional()
    x = torch.zeros(2, 2, dtype=F64)
    den = Denoiser(model, y=torch.tensor([0, 1]), guidance=2.0, budget=2)
    den.x0(x, 0.5)
    den.eps(x, 0.5)
    assert den.nfe == 2 and den.remaining == 0 and len(model.calls) == 2
    with pytest.raises(NFEBudgetExceeded):
        den.predict(x, 0.5)
    assert den.nfe == 2 and len(model.calls) == 2
    zero = Denoiser(model, budget=0)
    with pytest.raises(NFEBudgetExceeded):
        zero.x0(x, 0.5)
    assert len(model.calls) == 2
    free = Denoiser(model)
    for _ in range(5):
        free.eps(x, 0.5)
    assert free.nfe == 5 and free.remaining is None
