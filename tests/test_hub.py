"""Hub checkpoints (hf:<dir>) and InceptionV3 metrics, fully offline.

A tiny random diffusers UNet2DModel plus a DDPMScheduler config is written to tmp_path and loaded through
models.load_model('hf:' + dir); a random-init InceptionV3 state dict of torch-fidelity's layout stands in for
the real weights, and the FID statistics file is computed here. Every test runs with HF_HUB_OFFLINE=1 and
internet sockets disabled.
"""
import json
import math
import socket
import sys

import numpy as np
import pandas as pd
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

import bench.cli  # noqa: E402
from bench.inception import (Uint8Images, feature_extractor, features, frechet, inception_metrics,  # noqa: E402
                             save_fid_stats, to_uint8)
from bench.metrics import frechet_distance  # noqa: E402
from models import load_model  # noqa: E402
from solvers import Denoiser, SpecError, get_solver  # noqa: E402

PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may reach the network: hub offline, internet sockets refuse to connect or resolve."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    def getaddrinfo(*args, **kwargs):
        raise RuntimeError(f"test tried to resolve a host name: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def make_checkpoint(root, prediction_type="epsilon", beta_schedule="linear", num_class_embeds=None,
                    layout="pipeline", seed=0, scheduler=None):
    """A tiny random UNet2DModel (3x8x8) plus its DDPM scheduler config (or `scheduler`), saved as diffusers does."""
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds)
    with torch.no_grad():  # diffusers zero-inits nothing here, but make the output clearly depend on the input
        unet.conv_out.weight.mul_(10)
    sched = scheduler or DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, beta_start=1e-4,
                                       beta_end=0.02, prediction_type=prediction_type)
    if layout == "pipeline":
        unet.save_pretrained(root / "unet")
        sched.save_config(root / "scheduler")
        (root / "model_index.json").write_text(json.dumps({
            "_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"]}))
    else:
        unet.save_pretrained(root)
        sched.save_config(root)
    return root


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    return {p: make_checkpoint(base / p, prediction_type=p) for p in PREDICTIONS}


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A random-init state dict of torch-fidelity's InceptionV3, built without any download."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    saved = fe.load_state_dict_from_url, cls.load_state_dict
    fe.load_state_dict_from_url = lambda *a, **k: {}
    cls.load_state_dict = lambda self, *a, **k: None
    try:
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url, cls.load_state_dict = saved
    with torch.no_grad():  # He init: activations stay O(1) through the 20-odd ReLU layers
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
    path = tmp_path_factory.mktemp("inception") / "inception-random.pt"
    torch.save(net.state_dict(), path)
    return str(path)


def random_stats(path, seed=0, dim=2048):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, 64)) / 8
    np.savez(path, mu=rng.standard_normal(dim), sigma=a @ a.T + 1e-3 * np.eye(dim))  # PSD
    return str(path)


# ------------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_matches_the_scheduler_config(tmp_path, beta_schedule):
    make_checkpoint(tmp_path, beta_schedule=beta_schedule)
    model = load_model(f"hf:{tmp_path}")
    ref = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    assert model.schedule.num_train_steps == 1000
    assert model.schedule.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(model.schedule.alphas_cumprod, ref.alphas_cumprod.double(), atol=2e-6, rtol=0)
    # step n at t = (n + 1) / N carries alpha_bar_n; the network sees the (fractional) step index
    n = torch.tensor([0, 17, 999])
    t = model.schedule.t_of_step(n)
    torch.testing.assert_close(model.schedule.alpha(t) ** 2, model.schedule.alphas_cumprod[n])
    torch.testing.assert_close(model.schedule.model_time(t), n.double())


def test_interface(ckpt_dirs):
    model = load_model(f"hf:{ckpt_dirs['epsilon']}")
    assert model.shape == (3, 8, 8) and model.num_classes is None and model.prediction == "eps"
    assert model.feature_extractor == "inception-v3-compat" and model.data_range == (-1.0, 1.0)
    assert model.name == f"hf:{ckpt_dirs['epsilon']}"
    x = torch.randn(2, 3, 8, 8)
    out = model.forward(x, torch.tensor([0.5, 0.9], dtype=torch.float64))
    assert out.dtype == torch.float32 and out.shape == x.shape and torch.isfinite(out).all()
    m64 = load_model(f"hf:{ckpt_dirs['epsilon']}", dtype=torch.float64)
    assert next(m64.unet.parameters()).dtype == torch.float64
    out64 = m64.forward(x.double(), torch.tensor([0.5, 0.9], dtype=torch.float64))
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", list(PREDICTIONS))
def test_denoiser_converts_the_unet_output_exactly(ckpt_dirs, prediction_type):
    d = ckpt_dirs[prediction_type]
    model = load_model(f"hf:{d}", dtype=torch.float64)
    assert model.prediction == PREDICTIONS[prediction_type]
    unet = UNet2DModel.from_pretrained(d / "unet").double().eval()

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0123, 0.25, 0.5555, 0.97], dtype=torch.float64)  # fractional training steps
    steps = model.schedule.model_time(t)
    assert not torch.equal(steps, steps.round())
    with torch.no_grad():
        out = unet(x, steps.float(), return_dict=False)[0]
        # a fractional step is really passed on: rounding it changes the output
        assert not torch.allclose(out, unet(x, steps.round().float(), return_dict=False)[0])
        pred = Denoiser(model).predict(x, t)
    a = model.schedule.alpha(t).view(-1, 1, 1, 1)
    s = model.schedule.sigma(t).view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        eps, x0 = out, (x - s * out) / a
    elif prediction_type == "sample":
        eps, x0 = (x - a * out) / s, out
    else:  # v = alpha eps - sigma x0
        eps, x0 = a * out + s * x, a * x - s * out
    torch.testing.assert_close(pred.eps, eps, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(pred.x0, x0, atol=1e-10, rtol=1e-10)


def test_a_solver_runs(ckpt_dirs):
    model = load_model(f"hf:{ckpt_dirs['epsilon']}")
    solver = get_solver("ddim")
    grid = solver.plan(model.schedule, 3)
    x_T = torch.randn(4, *model.shape, generator=torch.Generator().manual_seed(0))
    d = Denoiser(model, budget=3)
    with torch.no_grad():
        x0 = solver.sample_on(d, x_T, grid)
    assert x0.shape == x_T.shape and torch.isfinite(x0).all() and d.nfe == 3


def test_dc_solver_calibrates_through_a_unet(tmp_path, ckpt_dirs):
    """The ratio search backpropagates through the hub UNet (float32) and the run then samples with the ratios."""
    out = tmp_path / "run"
    rc = bench.cli.main(["run", "--models", f"hf:{ckpt_dirs['v_prediction']}", "--solvers", "dpmpp-2m+dc",
                         "--nfe", "4", "--samples", "4", "--out", str(out), "--metrics", "traj_rmse", "--reference-rtol", "1e-3", "-q",
                         "--no-plots"])
    assert rc == 0
    entry, = json.loads((out / "calibration.json").read_text()).values()
    assert len(entry["ratios"]) == 4 and entry["ratios"][:2] == [1.0, 1.0] and entry["ratios"][2:] != [1.0, 1.0]
    df = pd.read_csv(out / "results.csv")
    assert df.loc[0, "nfe_used"] == 4 and math.isfinite(df.loc[0, "traj_rmse"])


def test_class_conditional_checkpoint(tmp_path):
    make_checkpoint(tmp_path, num_class_embeds=4)
    model = load_model(f"hf:{tmp_path}")
    assert model.num_classes == 4
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.5, 0.5], dtype=torch.float64)
    with torch.no_grad():
        a, b = model.forward(x, t, torch.tensor([0, 0])), model.forward(x, t, torch.tensor([1, 3]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class labels"):
        model.forward(x, t)
    assert load_model(f"hf:{tmp_path}:num_classes=3").num_classes == 3  # label 3 = the null label


def test_flat_layout(tmp_path):
    make_checkpoint(tmp_path, prediction_type="v_prediction", layout="flat")
    model = load_model(f"hf:{tmp_path}")
    assert model.prediction == "v" and model.shape == (3, 8, 8)


# ------------------------------------------------------------------------------------------------- errors


def test_errors_are_one_line_spec_errors(tmp_path, ckpt_dirs, monkeypatch):
    with pytest.raises(SpecError, match="not found"):
        load_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(SpecError, match="offline"):  # a repo id, no cache, HF_HUB_OFFLINE: no network try
        load_model("hf:nfebench-test/no-such-repo")
    with pytest.raises(SpecError, match="unknown option 'foo'"):
        load_model(f"hf:{ckpt_dirs['epsilon']}:foo=1")

    cond = tmp_path / "cond"
    (cond / "unet").mkdir(parents=True)
    (cond / "scheduler").mkdir()
    (cond / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (cond / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (cond / "scheduler" / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "linear"}))
    with pytest.raises(SpecError, match="not a UNet2DModel"):
        load_model(f"hf:{cond}")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="no diffusers checkpoint"):
        load_model(f"hf:{empty}")

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the 'hub' extra were not installed
    with pytest.raises(SpecError, match=r"pip install -e '\.\[hub\]'") as e:
        load_model(f"hf:{ckpt_dirs['epsilon']}")
    assert "\n" not in str(e.value)


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    rc = bench.cli.main(["run", "--models", f"hf:{tmp_path / 'nope'}", "--solvers", "ddim", "--nfe", "2",
                         "--samples", "4", "--out", str(tmp_path / "run"), "-q", "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and "not found" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------- inception


def test_uint8_conversion():
    x = torch.tensor([-1.0, -0.2, 0.0, 1.0, 1.5]).view(1, 1, 1, 5)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 1, 5)
    assert u[0, :, 0].tolist() == [[0, 102, 128, 255, 255]] * 3
    assert isinstance(Uint8Images(torch.zeros(2, 3, 4, 4))[0], torch.Tensor)


def test_frechet_matches_the_reference_formula():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 16)), rng.standard_normal((50, 16)) * 1.3 + 0.2
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert frechet(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-9)
    assert frechet(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_inception_metrics_against_stats_file(tmp_path, inception_weights):
    class Img:
        device, spec, fid_reference = "cpu", "img", "cifar10-train"  # fid_stats wins: nothing downloaded

    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = features(feature_extractor(inception_weights, False), Uint8Images(x), False).double().numpy()
    assert feats.shape == (8, 2048) and np.isfinite(feats).all() and feats.std(0).mean() > 1e-3
    own = tmp_path / "own.npz"
    np.savez(own, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    m = inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=str(own), reference=None,
                          cache_dir=tmp_path)
    assert set(m) == {"fid", "kid"} and math.isnan(m["kid"])
    # the samples' own moments: FID 0 (up to the square root of a rank-8 covariance's rounding noise)
    assert abs(m["fid"]) < 1e-4 * np.trace(np.cov(feats, rowvar=False))

    other = random_stats(tmp_path / "other.npz")
    m2 = inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=other, reference=None,
                           cache_dir=tmp_path)
    assert math.isfinite(m2["fid"]) and m2["fid"] > 1.0

    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(SpecError, match="2048"):
        inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=str(bad), reference=None,
                          cache_dir=tmp_path)
    with pytest.raises(SpecError, match="no FID reference"):
        Img.fid_reference = None
        inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=None, reference=None,
                          cache_dir=tmp_path)


def test_cli_run_offline(tmp_path, ckpt_dirs, inception_weights):
    out = tmp_path / "run"
    stats = random_stats(tmp_path / "stats.npz")
    rc = bench.cli.main(["run", "--models", f"hf:{ckpt_dirs['epsilon']}", "--solvers", "ddim", "--nfe", "2",
                         "--samples", "8", "--out", str(out), "--metrics", "fid", "--fid-stats", stats,
                         "--inception-weights", inception_weights, "-q", "--no-plots"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 1 and df.loc[0, "nfe_used"] == 2 and df.loc[0, "diverged_frac"] == 0
    assert math.isfinite(df.loc[0, "fid"])


def test_inception_metrics_against_a_reference_dataset(tmp_path, inception_weights, monkeypatch):
    """A reference given as data: a torch-fidelity registered dataset (as 'cifar10-train', here a stand-in
    registered for the test; its features are cached under cache_dir) or a folder of images. FID from the
    reference features' moments, and KID."""
    from PIL import Image
    from torch_fidelity.registry import DATASETS_REGISTRY

    class Img:
        device, spec, fid_reference = "cpu", "img", "nfebench-test-ref"  # the model's default reference

    g = torch.Generator().manual_seed(3)
    ref_images = torch.rand(10, 3, 8, 8, generator=g) * 2 - 1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setitem(DATASETS_REGISTRY, "nfebench-test-ref", lambda root, download: Uint8Images(ref_images))
    x = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    m = inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=None, reference=None,
                          cache_dir=tmp_path / "cache")
    assert math.isfinite(m["fid"]) and m["fid"] > 0 and math.isfinite(m["kid"])
    assert list((tmp_path / "cache" / "inception").glob("*/nfebench-test-ref-inception-v3-compat-features-2048.pt"))
    stats = save_fid_stats("nfebench-test-ref", tmp_path / "ref-stats.npz", inception_weights=inception_weights,
                           cuda=False)
    m_stats = inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=str(stats),
                                reference=None, cache_dir=None)
    assert m_stats["fid"] == pytest.approx(m["fid"], rel=1e-6) and math.isnan(m_stats["kid"])

    folder = tmp_path / "ref"
    folder.mkdir()
    for i, img in enumerate(to_uint8(ref_images)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")  # lossless: the same images
    m2 = inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=None, reference=str(folder),
                           cache_dir=None)
    assert m2["fid"] == pytest.approx(m["fid"], rel=1e-4) and m2["kid"] == pytest.approx(m["kid"], rel=1e-3)
    with pytest.raises(SpecError, match="unknown FID reference"):
        inception_metrics(Img(), x, inception_weights=inception_weights, fid_stats=None,
                          reference=str(tmp_path / "nowhere"), cache_dir=None)


@pytest.mark.cuda
def test_cli_run_on_cuda_gives_the_cpu_result(tmp_path, ckpt_dirs, inception_weights):
    """UNet and InceptionV3 on the GPU: the same cell as on the CPU, up to the GPU convolutions' rounding."""
    stats = random_stats(tmp_path / "stats.npz")
    rows = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / dev
        rc = bench.cli.main(["run", "--models", f"hf:{ckpt_dirs['v_prediction']}", "--solvers", "dpmpp-2m,ddim:eta=1",
                             "--nfe", "4", "--samples", "16", "--out", str(out), "--metrics", "fid",
                             "--fid-stats", stats, "--inception-weights", inception_weights, "--device", dev,
                             "-q", "--no-plots"])
        assert rc == 0
        rows[dev] = pd.read_csv(out / "results.csv").set_index("solver").sort_index()
        samples = {p.name: torch.load(p)["x"] for p in sorted((out / "samples").glob("*.pt"))}
        rows[dev + "-x"] = samples
    assert json.loads((tmp_path / "cuda" / "run.json").read_text())["device"] == torch.cuda.get_device_name(0)
    assert list(rows["cuda"].index) == list(rows["cpu"].index)
    assert (rows["cuda"]["nfe_used"] == 4).all()
    for name, x in rows["cpu-x"].items():
        torch.testing.assert_close(rows["cuda-x"][name], x, atol=2e-2, rtol=0)  # TF32 convolutions on the GPU
    for solver in rows["cpu"].index:
        a, b = rows["cpu"].loc[solver, "fid"], rows["cuda"].loc[solver, "fid"]
        assert math.isfinite(b) and math.isclose(a, b, rel_tol=1e-2), (solver, a, b)


# ------------------------------------------------------------------------------------- consistency models

@pytest.fixture(scope="module")
def cm_dir(tmp_path_factory):
    from diffusers import CMStochasticIterativeScheduler
    return make_checkpoint(tmp_path_factory.mktemp("cm"), seed=3,
                           scheduler=CMStochasticIterativeScheduler(num_train_timesteps=40))


def test_consistency_checkpoint_is_its_consistency_function(cm_dir):
    """f(x, sigma) = clamp(c_skip x + c_out F(c_in x, 250 log sigma)) with diffusers' scalings, as x0 on a VE schedule."""
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel
    model = load_model(f"hf:{cm_dir}")
    assert model.prediction == "x0" and model.schedule.kind == "ve" and model.schedule.consistency_steps == 40
    assert (model.schedule.t_min, model.schedule.T) == (0.002, 80.0)
    sched = CMStochasticIterativeScheduler.from_pretrained(str(cm_dir), subfolder="scheduler")
    unet = UNet2DModel.from_pretrained(str(cm_dir), subfolder="unet")
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for sigma in (80.0, 2.5, 0.3):
        xin = x * sigma   # a state at noise level sigma
        c_skip, c_out = sched.get_scalings_for_boundary_condition(torch.tensor(sigma))
        t = torch.tensor(sched.sigma_to_t(np.array([sigma]))[0])
        with torch.no_grad():
            out = unet(xin / (sigma ** 2 + 0.5 ** 2) ** 0.5, t).sample
            mine = model.forward(xin, torch.tensor(sigma, dtype=torch.float64))
        torch.testing.assert_close(mine, (c_out * out + c_skip * xin).clamp(-1, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("nfe", [1, 2, 3, 5])
def test_cm_multistep_matches_the_diffusers_scheduler(cm_dir, nfe):
    """Our cm-multistep on the loaded checkpoint = diffusers' CMStochasticIterativeScheduler loop (the
    ConsistencyModelPipeline's), same x_T and the same generator stream for the re-noising."""
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel
    sched = CMStochasticIterativeScheduler.from_pretrained(str(cm_dir), subfolder="scheduler")
    unet = UNet2DModel.from_pretrained(str(cm_dir), subfolder="unet")
    sched.set_timesteps(nfe)
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * sched.init_noise_sigma
    x, g = x_T.clone(), torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(out, t, x, generator=g).prev_sample
    model = load_model(f"hf:{cm_dir}")
    solver = get_solver("cm-multistep")
    grid = solver.plan(model.schedule, nfe).grid
    torch.testing.assert_close(grid.float(), sched.sigmas, atol=0, rtol=1e-6)
    d = Denoiser(model, budget=nfe)
    with torch.no_grad():
        mine = solver.sample_on(d, x_T, grid, generator=torch.Generator().manual_seed(7))
    assert d.nfe == nfe
    # float32 network; the scalings are float64 here, float32 there (seen: 1.8e-5 on one element of 768)
    torch.testing.assert_close(mine, x, atol=1e-4, rtol=1e-4)


def test_cm_multistep_tuned_indices_match_diffusers_custom_timesteps(cm_dir):
    """The CM repo's ts=0,22,39 (cd_imagenet64) is diffusers' set_timesteps(timesteps=[22, 0]): sigma 80 -> 1.3824."""
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel
    sched = CMStochasticIterativeScheduler.from_pretrained(str(cm_dir), subfolder="scheduler")
    unet = UNet2DModel.from_pretrained(str(cm_dir), subfolder="unet")
    sched.set_timesteps(timesteps=[22, 0])
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * sched.init_noise_sigma
    x, g = x_T.clone(), torch.Generator().manual_seed(8)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x, generator=g).prev_sample
    model = load_model(f"hf:{cm_dir}")
    solver = get_solver("cm-multistep:ts=0/22/39")
    grid = solver.plan(model.schedule, 2).grid
    torch.testing.assert_close(grid.float(), sched.sigmas, atol=0, rtol=1e-6)
    assert round(float(grid[1]), 4) == 1.3824
    with torch.no_grad():
        mine = solver.sample_on(Denoiser(model, budget=2), x_T, grid, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(mine, x, atol=1e-4, rtol=1e-4)


def test_cm_multistep_runs_from_the_cli(tmp_path, cm_dir, inception_weights):
    out = tmp_path / "run"
    rc = bench.cli.main(["run", "--models", f"hf:{cm_dir}", "--solvers", "cm-multistep,ddim", "--nfe", "1,2",
                         "--samples", "8", "--out", str(out), "--metrics", "fid",
                         "--fid-stats", random_stats(tmp_path / "stats.npz"), "--inception-weights",
                         inception_weights, "-q", "--no-plots"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and (df["nfe_used"] == df["nfe"]).all() and df["fid"].notna().all()
    with pytest.raises(SpecError, match="NFE 41 exceeds this consistency model's 40-point sigma grid"):
        get_solver("cm-multistep").plan(load_model(f"hf:{cm_dir}").schedule, 41)


# ------------------------------------------------------------------------------------- flow-matching models

def _rectified_flow_or_skip():
    from solvers.schedules import SCHEDULES
    if "rectified-flow" not in SCHEDULES:
        pytest.skip("solvers/schedules.py has no rectified-flow schedule yet")


@pytest.fixture(scope="module")
def flow_dir(tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler
    return make_checkpoint(tmp_path_factory.mktemp("flow"), seed=5, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))


def test_flow_matching_checkpoint_is_a_rectified_flow(flow_dir):
    """FlowMatchEulerDiscreteScheduler config: the rectified-flow schedule, the flow velocity as prediction, and the
    network at the float time 1000 t, never truncated."""
    _rectified_flow_or_skip()
    model = load_model(f"hf:{flow_dir}", dtype=torch.float64)
    assert model.prediction == "flow" and model.schedule.kind == "rf" and model.num_classes is None
    assert model.feature_extractor == "inception-v3-compat"
    unet = UNet2DModel.from_pretrained(flow_dir / "unet").double().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([1.0, 0.12345, 0.001], dtype=torch.float64)
    with torch.no_grad():
        want = unet(x, (1000 * t).float(), return_dict=False)[0]
        assert not torch.allclose(want, unet(x, (1000 * t).floor().float(), return_dict=False)[0])
        torch.testing.assert_close(model.forward(x, t), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("steps", [1, 4])
def test_flow_euler_matches_the_diffusers_flow_match_euler_loop(flow_dir, steps):
    _rectified_flow_or_skip()
    from diffusers import FlowMatchEulerDiscreteScheduler
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(flow_dir), subfolder="scheduler")
    unet = UNet2DModel.from_pretrained(str(flow_dir), subfolder="unet").eval()
    sched.set_timesteps(steps)
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    model = load_model(f"hf:{flow_dir}")
    solver = get_solver("flow-euler")
    plan = solver.plan(model.schedule, steps)
    torch.testing.assert_close(plan.grid.float(), sched.sigmas, atol=3e-8, rtol=0)
    d = Denoiser(model, budget=steps)
    with torch.no_grad():
        mine = solver.sample(d, x_T, plan)
    assert d.nfe == steps
    torch.testing.assert_close(mine, x, atol=1e-4, rtol=1e-4)   # float32 network and steps on both sides


@pytest.mark.parametrize("option,message", [
    ({"shift": 3.0}, r"shift=3 is not supported as the model's default; .*ddim:shift=3"),
    ({"use_dynamic_shifting": True}, "use_dynamic_shifting=True is not supported"),
    ({"invert_sigmas": True}, "invert_sigmas=True is not supported"),
])
def test_flow_matching_configs_that_move_the_grid_are_refused(tmp_path, option, message):
    _rectified_flow_or_skip()
    from diffusers import FlowMatchEulerDiscreteScheduler
    make_checkpoint(tmp_path, scheduler=FlowMatchEulerDiscreteScheduler(**option))
    with pytest.raises(SpecError, match=message) as e:
        load_model(f"hf:{tmp_path}")
    assert "\n" not in str(e.value)


def test_sidecar_class_count_and_checksums(tmp_path):
    """nfebench.json beside a checkpoint: its num_classes (11 embeddings, label 10 the null label) and the sha256 of
    every file, checked on load."""
    from models.hub import write_sidecar
    make_checkpoint(tmp_path, num_class_embeds=11)
    assert load_model(f"hf:{tmp_path}").num_classes == 11          # without it: every embedding is a class
    write_sidecar(tmp_path, num_classes=10)
    model = load_model(f"hf:{tmp_path}")
    assert model.num_classes == 10 and model.feature_extractor == "inception-v3-compat"
    sched = tmp_path / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace("0.02", "0.021"))
    with pytest.raises(SpecError, match=r"scheduler_config\.json is corrupt: .* restore the checkpoint's files"):
        load_model(f"hf:{tmp_path}")
