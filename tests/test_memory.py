"""Sizes that would exhaust the machine are refused while planning, with one line naming the estimate and the
limit; every metric's memory stays flat in the number of samples; gmm2d's KID is the subset estimator."""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import bench.runner as runner_mod
from bench import inception, metrics
from bench.cli import main
from bench.memory import GB, check_cell_memory, default_memory_limit_gb, estimate_cell_bytes, reference_batch
from bench.runner import Runner, plan
from bench.spec import RunConfig
from models import DiffusionModel, load_model
from solvers import SpecError, get_solver


def _no_work(monkeypatch):
    """Any sampling, noise draw or grid would be work: fail the test if the runner gets there."""
    def boom(*a, **k):
        raise AssertionError("work started before the memory check")
    monkeypatch.setattr(runner_mod, "initial_noise", boom)
    monkeypatch.setattr(Runner, "run_cell", boom)


def _spec(**kw):
    base = dict(models=["gmm2d"], solvers=["dpmpp-2m"], nfe=[10], samples=1000, metrics=["fid", "kid", "traj_rmse"])
    return RunConfig(**{**base, **kw})   # the dataclass itself: no validate(), so sizes past the spec's caps pass


def _one_line(msg: str) -> str:
    assert "\n" not in msg.strip()
    return msg


# ---- the estimator refuses before any work ------------------------------------------------------------------

def test_billion_nfe_refused_while_planning(monkeypatch, tmp_path):
    _no_work(monkeypatch)
    spec = _spec(nfe=[1_000_000_000], memory_limit_gb=8.0)
    with pytest.raises(SpecError) as e:
        Runner(spec, tmp_path / "run", log=lambda *a: None).run()
    msg = _one_line(str(e.value))
    assert "NFE=1000000000" in msg and "limit of 8 GB" in msg and "memory_limit_gb" in msg
    assert "--memory-limit-gb" in msg and "--nfe" in msg and "time grid" in msg
    assert not (tmp_path / "run").exists()


def test_billion_samples_refused_at_the_default_limit(monkeypatch, tmp_path):
    _no_work(monkeypatch)
    spec = _spec(samples=1_000_000_000)
    assert spec.memory_limit_gb == default_memory_limit_gb() > 0
    with pytest.raises(SpecError) as e:
        plan(spec)
    msg = _one_line(str(e.value))
    assert "1000000000 samples" in msg and f"limit of {spec.memory_limit_gb:g} GB" in msg
    assert "--memory-limit-gb" in msg


def test_cli_batch_scale_refused_one_line_exit_2(monkeypatch, tmp_path, capsys):
    _no_work(monkeypatch)
    out = tmp_path / "run"
    rc = main(["run", "--models", "gmm2d", "--solvers", "dpmpp-2m", "--nfe", "10", "--samples", "10000000",
               "--batch-size", "10000000", "--metrics", "fid", "--memory-limit-gb", "8", "--out", str(out), "-q", "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("nfebench: error: ")
    assert "10000000 samples" in err and "limit of 8 GB" in err and "--batch-size" in err
    assert not out.exists()


def test_samples_stream_in_batches_memory_is_flat_in_samples():
    """Samples are streamed batch by batch into the features: ten million gmm2d samples fit in 8 GB, and the
    estimate grows with the samples by no more than their kept features."""
    model, solver = load_model("gmm2d"), get_solver("dpmpp-2m")
    small, _ = estimate_cell_bytes(_spec(samples=10_000, memory_limit_gb=8.0), model, solver, 10)
    big, parts = estimate_cell_bytes(_spec(samples=10_000_000, memory_limit_gb=8.0), model, solver, 10)
    assert big < 8 * GB and big - small < 10_000_000 * 100


def test_cli_too_low_limit_refuses_a_normal_cell(monkeypatch, tmp_path, capsys):
    _no_work(monkeypatch)
    out = tmp_path / "run"
    rc = main(["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "10", "--samples", "500",
               "--memory-limit-gb", "0.05", "--out", str(out), "-q", "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "gmm2d ddim NFE=10" in err and "limit of 0.05 GB" in err and "--memory-limit-gb" in err
    assert not out.exists()


def test_limit_zero_turns_the_check_off_and_negative_is_refused(capsys, tmp_path):
    spec = _spec(samples=1_000_000_000, nfe=[1_000_000_000], memory_limit_gb=0.0)
    check_cell_memory(spec, load_model("gmm2d"), get_solver("dpmpp-2m"), 1_000_000_000)   # no error
    for bad in ("-1", "nan", "inf"):
        rc = main(["run", "--models", "gmm2d", "--memory-limit-gb", bad, "--out", str(tmp_path / "r")])
        assert rc == 2 and "memory_limit_gb must be a finite number >= 0" in capsys.readouterr().err
    spec = RunConfig()
    spec.update({"memory_limit_gb": "2.5"})
    assert spec.memory_limit_gb == 2.5


def test_estimate_of_ordinary_cells_is_modest_and_grows_with_size():
    model, solver = load_model("gmm2d"), get_solver("dpmpp-2m")
    small, _ = estimate_cell_bytes(_spec(samples=1000), model, solver, 10)
    big, _ = estimate_cell_bytes(_spec(samples=50_000), model, solver, 10)
    assert small < 2 * GB and big < 2 * GB and big < small + 50_000 * 1000   # flat: features, not samples
    batched, parts = estimate_cell_bytes(_spec(samples=10_000_000, batch_size=10_000), model, solver, 10)
    whole, _ = estimate_cell_bytes(_spec(samples=10_000_000, batch_size=0), model, solver, 10)   # one batch
    assert batched < whole / 5
    digits, _ = estimate_cell_bytes(_spec(models=["digits"], samples=1000, metrics=["fid", "kid", "cond_acc"]),
                                    load_model("digits"), solver, 10, guidance=4.0)
    assert digits < 2 * GB


def test_reference_solve_batches_only_beyond_its_budget():
    for name in ("gmm2d", "digits", "digits-oracle"):   # every committed run solves its reference in one batch
        assert reference_batch(load_model(name), 5000, guidance=4.0 if name != "gmm2d" else 1.0) == 5000

    class Huge(DiffusionModel):
        shape, activation_bytes_per_sample = (3, 256, 256), 1 << 28
    assert 1 <= reference_batch(Huge(), 50_000) < 10


# ---- KID: one core, always on subsets -----------------------------------------------------------------------

def _old_inception_kid(f1, f2, subsets, subset_size, seed=0):
    """bench/inception.py kid_subsets before this change, copied literally."""
    a = torch.as_tensor(np.asarray(f1), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(f2), dtype=torch.float64)
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        return math.nan
    d = a.shape[1]
    rng = np.random.RandomState(seed)
    vals = []
    for _ in range(subsets):
        x = a[torch.as_tensor(rng.choice(a.shape[0], m, replace=False))]
        y = b[torch.as_tensor(rng.choice(b.shape[0], m, replace=False))]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(float(sxx + syy - 2 * kxy.mean()))
    return float(np.mean(vals))


@pytest.mark.parametrize("subsets,size", [(2, 200), (3, 5000)])
def test_kid_core_gives_inceptions_old_values(subsets, size):
    """Subset by subset (the cheaper way at (2, 200)) the old values exactly; from whole-set kernels (at
    (3, 5000), where every subset is a whole set) the same sums in another order: equal to rounding."""
    rng = np.random.default_rng(7)
    f1 = rng.normal(size=(900, 16)).astype(np.float32)
    f2 = rng.normal(0.1, 1.1, size=(700, 16)).astype(np.float32)
    old = _old_inception_kid(f1, f2, subsets, size)
    whole = metrics.kid_whole_sets(900, 700, 16, subsets, min(size, 700))
    assert whole == (size == 5000)
    same = (lambda v: v == old) if not whole else (lambda v: v == pytest.approx(old, rel=1e-12))  # noqa: E731
    assert same(inception.kid_subsets(f1, f2, subsets=subsets, subset_size=size))
    assert same(metrics.kid(f1, f2, subsets=subsets, subset_size=size))
    assert same(metrics.kid(torch.from_numpy(f1), torch.from_numpy(f2), subsets=subsets, subset_size=size))


def _independent_subset_kid(x, ref, subsets):
    """The subset estimator in numpy: RandomState(0) draws, subsets of min(1000, N, n_ref)."""
    a, b = x.reshape(len(x), -1).double().numpy(), ref.reshape(len(ref), -1).double().numpy()
    m, d = min(1000, len(a), len(b)), a.shape[1]
    rng, vals = np.random.RandomState(0), []
    for _ in range(subsets):
        xs, ys = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (xs @ xs.T / d + 1) ** 3, (ys @ ys.T / d + 1) ** 3, (xs @ ys.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals))


def test_gmm2d_kid_honours_kid_subsets():
    model = load_model("gmm2d")
    x = (model.sample_data(3000, torch.Generator().manual_seed(3)) * 1.05).to(torch.float32)
    ref = model.reference.sample(2000, torch.Generator().manual_seed(12345))
    k3 = metrics.data_space_metrics(model, x, kid_subsets=3)["kid"]
    k7 = metrics.data_space_metrics(model, x, kid_subsets=7)["kid"]
    assert k3 != k7
    assert k3 == pytest.approx(_independent_subset_kid(x, ref, 3), rel=1e-9, abs=1e-12)
    assert k7 == pytest.approx(_independent_subset_kid(x, ref, 7), rel=1e-9, abs=1e-12)


def test_runner_passes_kid_subsets_to_gmm2d(tmp_path):
    kids = {}
    for s in (2, 5):
        spec = _spec(samples=300, nfe=[5], metrics=["kid"], kid_subsets=s, memory_limit_gb=4.0)
        df = Runner(spec, tmp_path / f"r{s}", log=lambda *a: None).run()["results"]
        kids[s] = float(df["kid"].iloc[0])
    assert kids[2] != kids[5]


# ---- memory flat in N ---------------------------------------------------------------------------------------

def test_moments_chunked_equal_numpy(monkeypatch):
    x = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0))
    f = x.double().numpy()
    mu, cov = metrics.moments(x)
    assert (mu == f.mean(0)).all() and (cov == np.cov(f, rowvar=False)).all()   # one chunk: bit for bit
    monkeypatch.setattr(metrics, "MOMENT_CHUNK_BYTES", 8 * 3 * 777)
    mu2, cov2 = metrics.moments(x)
    np.testing.assert_allclose(mu2, mu, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cov2, cov, rtol=1e-12, atol=1e-15)


def test_data_space_metrics_memory_flat_in_samples():
    """12,000 samples: today's N x N kernels alone took > 1 GB; the subsets take tens of MB."""
    code = textwrap.dedent("""
        import resource, torch
        from models import load_model
        from bench.metrics import data_space_metrics
        m = load_model("gmm2d")
        data_space_metrics(m, torch.randn(100, 2), kid_subsets=2)
        x = torch.randn(12000, 2)
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data_space_metrics(m, x, kid_subsets=2)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 300 * 2 ** 20
