"""Improved precision and recall (Kynkaanniemi et al. 2019): hand-computed cases, the paper's definition checked
against brute force and torch-fidelity's implementation, chunking, the model feature spaces, and a CLI run."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cell_data import CellData
from bench.metric_families import compute_metrics
from bench.metric_precision_recall import K, equal_sets, inside_balls, knn_radii, precision_recall


def col(*v):
    return np.array(v, dtype=np.float64)[:, None]


def test_one_dimensional_cases_by_hand():
    # k = 1: real radii 1, 1, 2 -> manifold [-1, 5]; 5 sits on a boundary and counts
    real, fake = col(0, 1, 3), col(4.5, 6, -2, 0.5, 5)
    assert precision_recall(real, fake, k=1) == (3 / 5, 1.0)
    # k = 3: real radii 3, 2, 2, 3, 9 -> [-3, 19]: -3 and 19 on boundaries, -4 and 19.5 outside
    real = col(0, 1, 2, 3, 10)
    assert torch.equal(knn_radii(real, 3), torch.tensor([9.0, 4, 4, 9, 81], dtype=torch.float64))
    assert precision_recall(real, col(-4, -3, 5, 19, 19.5, 12), k=3)[0] == 4 / 6
    # fake radii 1.5, 1, 1, 1.5 -> [-1.5, 3]: every fake point realistic, real 10 not covered
    assert precision_recall(real, col(0, 0.5, 1, 1.5), k=3) == (1.0, 4 / 5)


def test_identical_sets_score_one_and_far_sets_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5))
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, rng.normal(size=(150, 5)) + 100.0) == (0.0, 0.0)


def brute_force(real, fake, k):
    """The paper's definition, straight: all pairwise distances, sorted."""
    def manifold(queries, centres):
        d_cc = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        radii = np.sort(d_cc, axis=1)[:, k]                       # column 0 is the centre itself
        d_qc = np.linalg.norm(queries[:, None] - centres[None], axis=-1)
        return (d_qc <= radii[None]).any(1).mean()
    return manifold(fake, real), manifold(real, fake)


def test_matches_the_definition_and_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 8))
    fake = 1.3 * rng.normal(size=(260, 8)) + 0.4
    got = precision_recall(real, fake, k=K)
    assert got == pytest.approx(brute_force(real, fake, K), abs=1e-12)
    tf = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), neighborhood=K)
    assert got == pytest.approx(tf, abs=1e-6)             # torch-fidelity averages in float32
    assert 0.2 < got[0] < 0.95 and 0.2 < got[1] < 0.99     # a case that tells the two directions apart


def test_chunked_equals_unchunked():
    """Blocks change a distance in its last bits at most (the matrix products' rounding): never a score."""
    rng = np.random.default_rng(3)
    small = rng.normal(size=(30, 3))                              # blocks of one and two distances
    assert torch.allclose(knn_radii(small, K, chunk=1), knn_radii(small, K), rtol=1e-12, atol=0)
    assert precision_recall(small, small[:20] * 1.5, chunk=2) == precision_recall(small, small[:20] * 1.5)
    real, fake = rng.normal(size=(151, 4)), rng.normal(size=(131, 4)) * 1.2
    whole = precision_recall(real, fake, chunk=1 << 22)
    r_whole = knn_radii(real, K, chunk=1 << 22)
    for chunk in (97, 500, 151 * 7):
        assert precision_recall(real, fake, chunk=chunk) == whole
        assert torch.allclose(knn_radii(real, K, chunk=chunk), r_whole, rtol=1e-12, atol=0)
        assert torch.equal(inside_balls(fake, real, r_whole, chunk=chunk), inside_balls(fake, real, r_whole))


def test_needs_more_than_k_points_and_equal_sets():
    with pytest.raises(ValueError, match="more than 3 points"):
        knn_radii(col(0, 1, 2), 3)
    real, fake = np.arange(10.0)[:, None], np.arange(4.0)[:, None] + 0.5
    r, f = equal_sets(real, fake)
    assert len(r) == len(f) == 4 and np.array_equal(f, fake)
    assert np.array_equal(r, equal_sets(real, fake)[0]) and len(np.unique(r)) == 4   # fixed seed, no repeats
    r, f = equal_sets(fake, real)
    assert np.array_equal(r, fake) and np.array_equal(f, real[:4])


def _gmm_samples(model, n, components, seed):
    g = torch.Generator().manual_seed(seed)
    w = model.weights[components]
    comp = torch.as_tensor(components)[torch.multinomial(w, n, replacement=True, generator=g)]
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return model.means[comp] + (torch.linalg.cholesky(model.covs)[comp] @ z[:, :, None])[..., 0]


def test_gmm2d_mode_dropping_has_high_precision_and_low_recall():
    from models import load_model
    model = load_model("gmm2d")
    exact = _gmm_samples(model, 2000, list(range(9)), seed=7)
    dropped = _gmm_samples(model, 2000, [0, 1, 2, 3], seed=7)     # four of the nine modes
    pr_exact = compute_metrics(CellData(model, exact), ["precision", "recall"])
    pr_dropped = compute_metrics(CellData(model, dropped), ["precision", "recall"])
    assert pr_exact["precision"] > 0.9 and pr_exact["recall"] > 0.9
    assert pr_dropped["precision"] > 0.9 and pr_dropped["recall"] < 0.6
    x = exact[:10].clone()
    x[3:] = math.nan                                              # 3 finite samples <= k: nan, never computed
    few = compute_metrics(CellData(model, x), ["precision", "recall"])
    assert math.isnan(few["precision"]) and math.isnan(few["recall"])


def test_digits_classifier_feature_space():
    from models import load_model
    from models.digits_data import load_digits_tensors
    model = load_model("digits")
    x, _ = load_digits_tensors()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    real_half = compute_metrics(CellData(model, x[perm[:900]]), ["precision", "recall"])
    noise = compute_metrics(CellData(model, torch.rand(900, 1, 8, 8) * 2 - 1), ["precision", "recall"])
    assert real_half["precision"] > 0.8 and real_half["recall"] > 0.8
    assert noise["precision"] < real_half["precision"] - 0.3


def test_cli_run_writes_precision_and_recall(tmp_path):
    from bench.cli import main
    out = tmp_path / "run"
    assert main(["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "5", "--samples", "200", "--metrics",
                 "fid,precision,recall", "--kid-subsets", "5", "--out", str(out), "-q"]) == 0   # KID: kept short
    df = pd.read_csv(out / "results.csv")
    row = df.iloc[0]
    assert 0 < row["precision"] <= 1 and 0 < row["recall"] <= 1 and math.isfinite(row["fid"])
    md = (out / "fid_vs_nfe.md").read_text()
    assert "precision (k-NN, k = 3) vs NFE" in md and "recall (k-NN, k = 3) vs NFE" in md
    assert list(out.glob("precision_*.png")) and list(out.glob("recall_*.png"))


def test_inception_feature_space(tmp_path, monkeypatch):
    """Hub image models: InceptionV3 pool3 features (random-init weights, no download); the real features
    come from the reference dataset, none from FID statistics (then nan). (A 2048-d FID would double the time.)"""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from torch_fidelity.registry import DATASETS_REGISTRY

    from bench.inception import Uint8Images
    from bench.spec import RunConfig

    cls = fe.FeatureExtractorInceptionV3
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(cls, "load_state_dict", lambda self, *a, **k: None)
    torch.manual_seed(0)
    net = cls("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    with torch.no_grad():   # He init: activations stay O(1) through the ReLU layers
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0.0, math.sqrt(2.0 / mod.weight[0].numel()))
    weights = tmp_path / "inception-random.pt"
    torch.save(net.state_dict(), weights)

    class Img:
        device, spec, fid_reference, feature_extractor = "cpu", "img", "nfebench-test-pr", "inception-v3-compat"

    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setitem(DATASETS_REGISTRY, "nfebench-test-pr", lambda root, download: Uint8Images(images))
    spec = RunConfig(inception_weights=str(weights))
    same = compute_metrics(CellData(Img(), images.clone(), spec=spec, cache_dir=tmp_path / "cache"),
                           ["precision", "recall"])
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    stats = RunConfig(inception_weights=str(weights), fid_stats=str(tmp_path / "stats.npz"))
    only_stats = compute_metrics(CellData(Img(), images.clone(), spec=stats), ["precision", "recall"])
    assert math.isnan(only_stats["precision"]) and math.isnan(only_stats["recall"])
