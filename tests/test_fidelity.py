"""FID/KID through torch-fidelity with the shipped digits classifier as feature extractor."""
import json
import math
import shutil

import pytest
import torch

from bench.cell_data import CellData
from bench.fidelity import fid_floor
from bench.metric_families import compute_metrics
from bench.spec import RunConfig


def fidelity_metrics(model, samples, labels, cache_dir=None):
    """FID, KID and cond_acc of model-space samples through the metric registry, as a cell computes them."""
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    data = CellData(model, samples, y=y, spec=RunConfig(metrics=["fid", "kid", "cond_acc"]), cache_dir=cache_dir)
    out = compute_metrics(data, ["fid", "kid", "cond_acc"])
    return {k: out[k] for k in ("fid", "kid", "cond_acc")}
from models import load_model
from models.classifier import FEATURE, classifier_info, classify, load_classifier, register_fidelity
from models.digits_data import TensorImages, load_digits_tensors, train_test_split
from models.weights_store import SHA_FILE, WEIGHTS_DIR, WeightsError, load_weights


@pytest.fixture(scope="module")
def data():
    return load_digits_tensors()


@pytest.fixture(scope="module")
def model():
    return load_model("digits-oracle")


def test_classifier_heldout_accuracy(data):
    x, y = data
    _, te = train_test_split(int(classifier_info()["seed"]))
    acc = (classify(x[te]) == y[te]).double().mean().item()
    assert acc >= 0.97
    assert acc == pytest.approx(float(classifier_info()["heldout_accuracy"]), abs=1e-6)


def test_extractor_through_calculate_metrics(data):
    import torch_fidelity

    register_fidelity()
    register_fidelity()  # idempotent
    x, _ = data
    out = torch_fidelity.calculate_metrics(
        input1=TensorImages(x[:300]), input2=TensorImages(x[300:600]), feature_extractor="digits-classifier",
        fid=True, kid=True, isc=True, kid_subset_size=100, kid_subsets=10, cuda=False, cache=False,
        verbose=False, save_cpu_ram=True)
    assert math.isfinite(out["frechet_inception_distance"]) and out["frechet_inception_distance"] > 0
    assert math.isfinite(out["kernel_inception_distance_mean"])
    assert out["inception_score_mean"] > 5  # confident, balanced classes
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fe = FEATURE_EXTRACTORS_REGISTRY["digits-classifier"]("digits-classifier", [FEATURE, "logits"])
    feats, logits = fe(x[:10])
    assert feats.shape == (10, int(FEATURE)) and feats.dtype == torch.float32
    torch.testing.assert_close(logits, load_classifier()(x[:10]))
    u8 = ((x[:10] + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(fe(u8)[0], feats, atol=0.1, rtol=0.02)  # uint8 rounding only


def test_fidelity_metrics_real_vs_noise(data, model, tmp_path):
    x, y = data
    idx = torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:1000]
    real = fidelity_metrics(model, x[idx], y[idx], cache_dir=tmp_path)
    assert set(real) == {"fid", "kid", "cond_acc"}
    assert real["cond_acc"] > 0.99 and real["fid"] < 10
    # one feature pass (bench/cell_data.py) gives torch-fidelity's own FID bit for bit; KID is its estimator on
    # its subsets in float64 (torch-fidelity sums in float32): equal to its rounding
    from bench.fidelity import _calculate
    from models.classifier import classifier_info, register_fidelity
    from models.digits_data import TensorImages
    register_fidelity()
    tf = _calculate(TensorImages(x[idx]), "digits", tmp_path / classifier_info()["sha256"][:12], kid=True,
                    n_min=1000, kid_subsets=100)
    assert real["fid"] == tf["fid"] and real["kid"] == pytest.approx(tf["kid"], rel=1e-5)
    noise = fidelity_metrics(model, torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                             y[:500], cache_dir=tmp_path)
    assert noise["fid"] > 10 * real["fid"] and noise["kid"] > real["kid"] and noise["cond_acc"] < 0.5
    again = fidelity_metrics(model, x[idx], None, cache_dir=tmp_path)
    assert again["fid"] == pytest.approx(real["fid"]) and math.isnan(again["cond_acc"])


def test_fidelity_metrics_non_finite(data, model, tmp_path):
    x, y = data
    s = x[:300].clone()
    s[::3] = float("nan")
    s[1::7] = float("inf")
    out = fidelity_metrics(model, s, y[:300], cache_dir=tmp_path)
    assert math.isfinite(out["fid"]) and math.isfinite(out["kid"]) and out["cond_acc"] > 0.95
    nan = fidelity_metrics(model, torch.full((10, 1, 8, 8), float("nan")), y[:10], cache_dir=tmp_path)
    assert all(math.isnan(v) for v in nan.values())


def test_fid_floor():
    f = fid_floor(0)
    assert 0 < f < 30 and f == pytest.approx(fid_floor(0))


def test_classifier_weights_checked(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(WEIGHTS_DIR / "digits-classifier.safetensors", d)
    shutil.copy(WEIGHTS_DIR / SHA_FILE, d)
    load_weights("digits-classifier", d)
    sums = json.loads((d / SHA_FILE).read_text())
    sums["digits-classifier.safetensors"] = "0" * 64
    (d / SHA_FILE).write_text(json.dumps(sums))
    with pytest.raises(WeightsError, match=r"digits-classifier\.safetensors is corrupt.*nfebench train digits-classifier"):
        load_weights("digits-classifier", d)
