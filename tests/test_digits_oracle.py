"""digits-oracle: the exact posterior-mean denoiser of the empirical digits set."""
import time

import pytest
import torch

from models import load_model
from solvers import Denoiser, get_solver

F64 = torch.float64


@pytest.fixture(scope="module")
def oracle():
    return load_model("digits-oracle")


def _naive(images, x, a, s):
    """Posterior mean by the direct formula (distances, then softmax), one sample at a time."""
    out = []
    for xi in x.reshape(x.shape[0], -1).to(F64):
        logp = -((xi[None] - a * images) ** 2).sum(1) / (2 * s ** 2)
        w = torch.softmax(logp, 0)
        out.append(w @ images)
    return torch.stack(out)


def test_interface(oracle):
    assert oracle.prediction == "x0" and oracle.num_classes == 10 and oracle.shape == (1, 8, 8)
    assert oracle.feature_extractor == "digits-classifier"
    assert oracle.schedule.num_train_steps == 1000
    out = oracle.forward(torch.randn(3, 1, 8, 8), torch.full((3,), 0.3, dtype=F64))
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.float32
    assert oracle.forward(torch.randn(3, 1, 8, 8, dtype=F64), torch.full((3,), 0.3, dtype=F64)).dtype == F64


def test_matches_direct_formula(oracle):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 8, 8, generator=g, dtype=F64)
    t = torch.tensor(0.4, dtype=F64)
    a, s = float(oracle.schedule.alpha(t)), float(oracle.schedule.sigma(t))
    got = oracle.forward(x, t.expand(5)).reshape(5, -1)
    torch.testing.assert_close(got, _naive(oracle.images, x, a, s))
    c = 7
    got_c = oracle.forward(x, t.expand(5), torch.full((5,), c)).reshape(5, -1)
    torch.testing.assert_close(got_c, _naive(oracle.images[oracle.labels == c], x, a, s))


def test_tiny_sigma_returns_nearest_training_image(oracle):
    g = torch.Generator().manual_seed(1)
    t = torch.full((50,), 1e-3, dtype=F64)                 # t_min: sigma = 0.01
    a = float(oracle.schedule.alpha(t[0]))
    x = torch.randn(50, 1, 8, 8, generator=g, dtype=F64)  # far from the data: still exactly one winner
    out = oracle.forward(x, t).reshape(50, -1)
    nearest = torch.cdist(x.reshape(50, -1) / a, oracle.images).argmin(1)
    torch.testing.assert_close(out, oracle.images[nearest], atol=1e-9, rtol=0)
    assert torch.isfinite(out).all()
    # a noisy training image is denoised back onto itself
    i = torch.arange(0, 1797, 37)
    xi = oracle.images[i].reshape(-1, 1, 8, 8)
    xt = a * xi + 0.01 * torch.randn(xi.shape, generator=g, dtype=F64)
    torch.testing.assert_close(oracle.forward(xt, torch.full((i.numel(),), 1e-3, dtype=F64)), xi, atol=1e-9, rtol=0)


def test_conditional_only_returns_its_class(oracle):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 1, 8, 8, generator=g, dtype=F64)
    y = torch.arange(40) % 10
    t = torch.full((40,), 1e-3, dtype=F64)
    out = oracle.forward(x, t, y).reshape(40, -1)
    d = torch.cdist(out, oracle.images)
    idx = d.argmin(1)
    assert (d.min(1).values < 1e-9).all()
    assert (oracle.labels[idx] == y).all()
    # the null label and y=None are the unconditional posterior
    torch.testing.assert_close(oracle.forward(x, t, torch.full((40,), 10)), oracle.forward(x, t, None))
    # guidance through the Denoiser runs (conditional and null passes batched)
    p = Denoiser(oracle, y=y, guidance=3).predict(x.float(), 0.5)
    assert torch.isfinite(p.x0).all()


def test_batched_speed(oracle):
    x = torch.randn(2000, 1, 8, 8)
    y = torch.arange(2000) % 10
    t0 = time.perf_counter()
    out = oracle.forward(x, torch.full((2000,), 0.05, dtype=F64), y)
    assert time.perf_counter() - t0 < 2.0 and torch.isfinite(out).all()


def test_sampling_lands_on_training_images(oracle):
    n = 100
    y = torch.arange(n) % 10
    s = get_solver("dpmpp-3m")
    x = s.sample_on(Denoiser(oracle, y=y, budget=50), torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                 s.plan(oracle.schedule, 50))
    d = torch.cdist(x.reshape(n, -1).to(F64), oracle.images)
    nn_dist, idx = d.min(1)
    # the grid ends at t_min (sigma = 0.01): what remains is that noise, ~0.01 * sqrt(64)
    assert nn_dist.mean() < 0.2
    assert (oracle.labels[idx] == y).all()


def test_mixed_labels_per_row(oracle):
    """Rows of one batch with different labels (and the null label 10 = unconditional) each get their own
    posterior mean, per-sample times included."""
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([3, 10, 0, 3, 9, 10])
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=F64)
    t = torch.linspace(0.05, 0.9, 6, dtype=F64)
    got = oracle.forward(x, t, y).reshape(6, -1)
    for i in range(6):
        a, s = float(oracle.schedule.alpha(t[i])), float(oracle.schedule.sigma(t[i]))
        images = oracle.images if y[i] == 10 else oracle.images[oracle.labels == y[i]]
        torch.testing.assert_close(got[i:i + 1], _naive(images, x[i:i + 1], a, s))
