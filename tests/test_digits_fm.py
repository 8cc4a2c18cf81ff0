"""digits-fm: the rectified-flow digits model: its objective (velocity target, logit-normal times), training
(deterministic, recorded sha256), loading (sha256-checked, one-line errors), the flow conversion through the
Denoiser, sampling with exact NFE, and (slow, with the shipped weights) the issue's acceptance point."""
import json
import math

import pytest
import torch

from models import list_models, load_model
from models.digits_fm import DigitsFM
from models.training import TRAINERS, logit_normal_times, train_digits_fm, velocity_loss
from models.weights_store import SHA_FILE, WEIGHTS_DIR, WeightsError, sha256_of
from solvers import Denoiser, SpecError, get_solver
from solvers.schedules import RectifiedFlow

F64 = torch.float64
TINY = {"width": 32, "blocks": 1, "mult": 2, "temb": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step training run of the full-size network (the model builds models.digits.ARCH): its folder."""
    d = tmp_path_factory.mktemp("fm")
    train_digits_fm(d, seed=1, steps=3, batch_size=16, log=None)
    return d


@pytest.fixture(scope="module")
def model(trained):
    return load_model(f"digits-fm:weights={trained}")


def _toy_batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 1, 8, 8, generator=g, dtype=F64) * 2 - 1
    eps = torch.randn(n, 1, 8, 8, generator=g, dtype=F64)
    t = torch.rand(n, generator=g, dtype=F64) * 0.98 + 0.01
    return x0, eps, t, torch.arange(n) % 10


def test_velocity_loss_targets_eps_minus_x0():
    """A network that returns the exact velocity of the toy pairs, (x_t - x0)/t = eps - x0 (reading t from the
    1000 t it is given), has zero loss; the eps target and Salimans-Ho's v do not."""
    x0, eps, t, y = _toy_batch()
    sched = RectifiedFlow()
    seen = []

    def exact(xt, step, y_):
        seen.append(step)
        return (xt - x0) / (step / 1000).view(-1, 1, 1, 1)

    assert velocity_loss(exact, sched, x0, y, t, eps).item() < 1e-28
    torch.testing.assert_close(seen[0], 1000 * t, rtol=0, atol=0)

    def eps_net(xt, step, y_):
        return eps

    def salimans_v(xt, step, y_):
        tt = (step / 1000).view(-1, 1, 1, 1)
        return (1 - tt) * eps - tt * x0

    for wrong in (eps_net, salimans_v):
        assert velocity_loss(wrong, sched, x0, y, t, eps).item() > 0.1


def test_logit_normal_times():
    """t = sigmoid(u), u ~ N(m, s^2): logit(t) has mean m and std s, t's median is sigmoid(m); m = 0 is symmetric
    about 1/2 and leaves P(t < 0.05) = Phi(logit(0.05)) = 1.6e-3 (docs: the ends are barely trained)."""
    for m, s in ((0.0, 1.0), (0.5, 0.7)):
        t = logit_normal_times(200_000, torch.Generator().manual_seed(0), m, s).double()
        assert 0 < t.min() and t.max() < 1
        u = torch.logit(t)
        assert abs(u.mean().item() - m) < 0.01 and abs(u.std().item() - s) < 0.01
        assert abs(t.median().item() - 1 / (1 + math.exp(-m))) < 0.005
    t = logit_normal_times(200_000, torch.Generator().manual_seed(1)).double()
    assert abs(t.mean().item() - 0.5) < 0.003
    assert abs((t < 0.05).double().mean().item() - 1.6e-3) < 4e-4
    # deterministic given the generator
    a, b = (logit_normal_times(5, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)


def test_registered_and_trainer():
    assert "digits-fm" in list_models() and TRAINERS["digits-fm"] is train_digits_fm


def test_trained_weights_load_with_their_sha256(trained, model):
    path = trained / "digits-fm.safetensors"
    sums = json.loads((trained / SHA_FILE).read_text())
    assert sums == {"digits-fm.safetensors": sha256_of(path)}
    assert model.weights_sha256 == sums["digits-fm.safetensors"]
    assert model.meta["network_time"] == "1000 t" and model.meta["timesteps"].startswith("logit-normal")
    assert model.meta["steps"] == "3" and float(model.meta["p_uncond"]) == 0.15
    assert path.stat().st_size < 10 * 2 ** 20


def test_interface(model):
    assert model.prediction == "flow" and model.schedule.kind == "rf" and model.schedule.name == "rectified-flow"
    assert (model.schedule.t_min, model.schedule.T) == (1e-3, 1 - 1e-3)
    assert model.num_classes == 10 and model.shape == (1, 8, 8)
    assert model.feature_extractor == "digits-classifier" and model.fid_reference == "digits"
    from models.digits_data import load_digits_tensors
    x0, y0 = load_digits_tensors()
    assert torch.equal(model.reference.samples, x0) and torch.equal(model.reference.labels, y0)
    # the network sees 1000 t, as in training; y=None is the null label
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 0.999, 0.5, 1e-3], dtype=F64), torch.tensor([0, 3, 9, 10])
    with torch.no_grad():
        want = model.net(x, 1000 * t, y)
    torch.testing.assert_close(model.forward(x, t, y), want, rtol=0, atol=0)
    torch.testing.assert_close(model.forward(x, t, None), model.forward(x, t, torch.full((4,), 10)))


def test_wrong_sha256_refused_in_one_line(trained, tmp_path):
    import shutil
    d = tmp_path / "w"
    shutil.copytree(trained, d)
    sums = json.loads((d / SHA_FILE).read_text())
    sums["digits-fm.safetensors"] = "0" * 64
    (d / SHA_FILE).write_text(json.dumps(sums))
    with pytest.raises(WeightsError) as e:
        load_model(f"digits-fm:weights={d}")
    msg = str(e.value)
    assert isinstance(e.value, SpecError) and "\n" not in msg
    assert "digits-fm.safetensors is corrupt" in msg and f"nfebench train digits-fm --out {d}" in msg


def test_missing_weights_name_the_train_command(tmp_path, monkeypatch):
    import models.weights_store as store
    monkeypatch.setattr(store, "WEIGHTS_DIR", tmp_path)      # as if the package shipped no digits-fm weights
    with pytest.raises(WeightsError) as e:
        DigitsFM()
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("is missing; recreate it with `nfebench train digits-fm`")


def test_training_deterministic(tmp_path):
    runs = [train_digits_fm(tmp_path / f"r{i}", seed=5, steps=4, batch_size=16, arch=TINY, log=None)
            for i in range(2)]
    assert sha256_of(runs[0]) == sha256_of(runs[1])
    other = train_digits_fm(tmp_path / "r2", seed=6, steps=4, batch_size=16, arch=TINY, log=None)
    assert sha256_of(other) != sha256_of(runs[0])


def test_denoiser_flow_conversion(model):
    """x0 = x_t - t v and eps = x_t + (1 - t) v from the model's velocity, finite at t = 1 (alpha = 0); guidance
    on v."""
    x = torch.randn(6, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    y = torch.arange(6)
    m64 = load_model(f"{model.spec}", dtype=F64)
    for t in (1.0, 0.999, 0.6, 1e-3):
        tv = torch.full((6,), t, dtype=F64)
        v = m64.forward(x, tv, y)
        p = Denoiser(m64, y=y).predict(x, t)
        torch.testing.assert_close(p.x0, x - t * v, rtol=0, atol=1e-14)
        torch.testing.assert_close(p.eps, x + (1 - t) * v, rtol=0, atol=1e-14)
        torch.testing.assert_close(p.velocity, v, rtol=0, atol=1e-13)
        assert torch.isfinite(p.x0).all()
    v_c, v_u = m64.forward(x, tv, y), m64.forward(x, tv, None)
    p = Denoiser(m64, y=y, guidance=4.0).predict(x, 1e-3)
    torch.testing.assert_close(p.velocity, v_u + 4 * (v_c - v_u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", ["flow-euler", "flow-heun", "dpmpp-2m", "dpmpp-2m:grid=flow_linspace,shift=3",
                                  "unipc:shift=3"])
def test_sampling_exact_nfe(model, spec):
    s = get_solver(spec)
    y = torch.arange(20) % 10
    for nfe in (3, 7):
        d = Denoiser(model, y=y, guidance=4.0, budget=nfe)
        out = s.sample_on(d, torch.randn(20, 1, 8, 8), s.plan(model.schedule, nfe))
        assert d.nfe == nfe and out.shape == (20, 1, 8, 8) and torch.isfinite(out).all()


@pytest.mark.slow
def test_cli_run(trained, tmp_path):
    """Through the harness: `digits-fm:weights=DIR` with flow-euler (from t = 1) and dpmpp-2m, scored (~25 s)."""
    import pandas as pd

    from bench.cli import main
    rc = main(["run", "--models", f"digits-fm:weights={trained}", "--solvers", "flow-euler,dpmpp-2m", "--nfe", "4",
               "--guidance", "1,4", "--samples", "40", "--metrics", "fid,cond_acc", "--out", str(tmp_path / "r"),
               "--no-plots"])
    assert rc == 0
    rows = pd.read_csv(tmp_path / "r" / "results.csv")
    assert len(rows) == 4 and (rows.nfe_used == 4).all() and rows.fid.map(math.isfinite).all()


SHIPPED = WEIGHTS_DIR / "digits-fm.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="digits-fm weights not shipped (`nfebench train digits-fm`)")
def test_acceptance_dpmpp_2m_nfe50(tmp_path):
    """Issue 20: the shipped digits-fm at dpmpp-2m, NFE 50, 2,000 samples, guidance 1: FID within 3x the
    real-vs-real floor + 1 (bench.fidelity.fid_floor: two disjoint halves of the digits) and cond_acc >= 0.9."""
    import pandas as pd

    from bench.cli import main
    from bench.fidelity import fid_floor
    rc = main(["run", "--models", "digits-fm", "--solvers", "dpmpp-2m", "--nfe", "50", "--guidance", "1",
               "--seeds", "0", "--samples", "2000", "--metrics", "fid,cond_acc", "--out", str(tmp_path / "r"),
               "--no-plots"])
    assert rc == 0
    row = pd.read_csv(tmp_path / "r" / "results.csv").iloc[0]
    floor = fid_floor(0)
    assert row.nfe_used == 50 and row.n_samples == 2000
    assert row.fid <= 3 * floor + 1.0, (row.fid, floor)
    assert row.cond_acc >= 0.9, row.cond_acc
