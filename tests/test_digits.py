"""digits: the trained eps-model of sklearn's 8x8 digits: loading (sha256-checked), forward, guidance, training."""
import json
import shutil

import pytest
import torch

from models import load_model
from models.digits import Digits
from models.weights_store import SHA_FILE, WEIGHTS_DIR, WeightsError, sha256_of
from solvers import Denoiser, SpecError, get_solver


@pytest.fixture(scope="module")
def model():
    return load_model("digits")


def test_interface(model):
    assert model.prediction == "eps" and model.num_classes == 10 and model.shape == (1, 8, 8)
    assert model.feature_extractor == "digits-classifier"
    assert model.schedule.num_train_steps == 1000
    assert float(model.schedule.alphas_cumprod[0]) == pytest.approx(1 - 1e-4)
    ref = model.reference
    assert ref.samples.shape == (1797, 1, 8, 8) and ref.labels.shape == (1797,)
    assert ref.samples.min() == -1 and ref.samples.max() == 1
    assert sorted(ref.labels.unique().tolist()) == list(range(10))


def test_forward_shapes_dtypes(model):
    x = torch.randn(6, 1, 8, 8)
    t = torch.linspace(1e-3, 1.0, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 9, 10])
    out = model.forward(x, t, y)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # y=None is the null label
    torch.testing.assert_close(model.forward(x, t, None), model.forward(x, t, torch.full((6,), 10)))
    # labels matter
    assert not torch.allclose(model.forward(x, t, torch.zeros(6, dtype=torch.long)),
                              model.forward(x, t, torch.ones(6, dtype=torch.long)))
    m64 = load_model("digits", dtype=torch.float64)
    out64 = m64.forward(x.double(), t, y)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-4, rtol=1e-4)


def test_guidance_through_denoiser(model):
    y = torch.arange(8) % 10
    x = torch.randn(8, 1, 8, 8)
    d = Denoiser(model, y=y, guidance=3, budget=2)
    p = d.predict(x, 0.5)
    assert d.nfe == 1 and p.x0.shape == x.shape and torch.isfinite(p.eps).all()
    e_c = model.forward(x, torch.full((8,), 0.5, dtype=torch.float64), y)
    e_u = model.forward(x, torch.full((8,), 0.5, dtype=torch.float64), None)
    torch.testing.assert_close(p.eps, e_u + 3 * (e_c - e_u), atol=1e-5, rtol=1e-5)
    s = get_solver("dpmpp-2m")
    out = s.sample_on(Denoiser(model, y=y, guidance=3, budget=5), torch.randn(8, 1, 8, 8), s.plan(model.schedule, 5))
    assert out.shape == (8, 1, 8, 8) and torch.isfinite(out).all()


def _copy_weights(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(WEIGHTS_DIR / "digits.safetensors", d)
    shutil.copy(WEIGHTS_DIR / SHA_FILE, d)
    return d


def test_weights_checked(tmp_path):
    d = _copy_weights(tmp_path)
    load_model(f"digits:weights={d}")                          # a good copy loads
    f = d / "digits.safetensors"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as e:
        load_model(f"digits:weights={d}")
    msg = str(e.value)
    assert isinstance(e.value, SpecError) and "\n" not in msg
    assert "digits.safetensors" in msg and "corrupt" in msg and "nfebench train digits" in msg
    f.unlink()
    with pytest.raises(WeightsError, match=r"digits\.safetensors is missing.*nfebench train digits"):
        Digits(str(d))


def test_unrecorded_weights_refused(tmp_path):
    d = _copy_weights(tmp_path)
    (d / SHA_FILE).write_text("{}")
    with pytest.raises(WeightsError, match="no sha256 recorded"):
        Digits(str(d))


def test_shipped_checksums_match():
    sums = json.loads((WEIGHTS_DIR / SHA_FILE).read_text())
    for name in ("digits.safetensors", "digits-classifier.safetensors"):
        assert sums[name] == sha256_of(WEIGHTS_DIR / name)
        assert (WEIGHTS_DIR / name).stat().st_size < 10 * 2 ** 20


def test_training_deterministic_and_recorded(tmp_path):
    from models.training import TRAINERS

    arch = {"width": 32, "blocks": 1, "mult": 2, "temb": 16}
    paths = [TRAINERS["digits"](tmp_path / f"run{i}", seed=3, steps=20, batch_size=32, arch=arch, log=None)
             for i in range(2)]
    assert sha256_of(paths[0]) == sha256_of(paths[1])
    sums = json.loads((tmp_path / "run0" / SHA_FILE).read_text())
    assert sums["digits.safetensors"] == sha256_of(paths[0])
    other = TRAINERS["digits"](tmp_path / "run2", seed=4, steps=20, batch_size=32, arch=arch, log=None)
    assert sha256_of(other) != sha256_of(paths[0])


@pytest.mark.slow
def test_samples_are_digits_of_their_class():
    from models.classifier import classify

    model = load_model("digits")
    y = torch.arange(300) % 10
    s = get_solver("dpmpp-3m")
    x = s.sample_on(Denoiser(model, y=y, budget=20), torch.randn(300, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
                 s.plan(model.schedule, 20))
    assert (classify(x) == y).double().mean() > 0.9


def test_importance_timesteps_keep_ddpm_objective():
    """The importance-sampled timesteps reweight to DDPM's uniform-t loss: E_q[w f(t)] = mean_t f(t)."""
    from models.training import LOW_STEPS, P_LOW, importance_timesteps

    n, N = 400_000, 1000
    t, w = importance_timesteps(n, N, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= N - 1
    low = (t < LOW_STEPS).double().mean().item()
    assert abs(low - (P_LOW + (1 - P_LOW) * LOW_STEPS / N)) < 0.005     # 0.625: 2.5x the uniform share
    for f in (lambda s: s.double(), lambda s: (s.double() / N) ** 3, lambda s: (s < 100).double()):
        uniform = f(torch.arange(N)).mean().item()
        estimate = (w.double() * f(t)).mean().item()
        assert abs(estimate - uniform) < 0.01 * max(uniform, 0.1)
