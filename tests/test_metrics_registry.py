"""The metric registry: the built-ins, what the harness derives from it, adding a metric in one place, and the
one Frechet/moments/KID core every feature space calls."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import metrics as core
from bench.cell_data import CellData
from bench.metric_families import (CHOOSABLE, METRICS, CellResult, Metric, compute_metrics, get_metric, needing,
                                   register_metric, tabled_metrics)
from bench.results_rows import LOWER_IS_BETTER, METRIC_NAMES
from bench.spec import RunConfig
from solvers import SpecError


@pytest.fixture
def registered():
    """Register test-only metrics; they leave the registry when the test ends."""
    added = []

    def add(metric):
        added.append(metric.name)
        return register_metric(metric)
    yield add
    for name in added:
        METRICS.pop(name, None)


def test_builtins_keep_their_names_labels_and_directions():
    for name, label, lower in [("fid", "FID", True), ("kid", "KID", True), ("traj_rmse", "trajectory RMSE", True),
                               ("cond_acc", "conditional accuracy", False), ("diverged_frac", "diverged fraction",
                                                                             True)]:
        assert LOWER_IS_BETTER[name] is lower and METRIC_NAMES[name] == label == get_metric(name).label
    assert LOWER_IS_BETTER["precision"] is False and LOWER_IS_BETTER["recall"] is False
    assert list(LOWER_IS_BETTER) == list(METRICS) and METRIC_NAMES.get("nope", "nope") == "nope"
    assert tabled_metrics()[:3] == ["fid", "traj_rmse", "cond_acc"] and "kid" not in tabled_metrics()
    assert needing(["precision"], "features") and not needing(["traj_rmse"], "features")
    assert needing(["traj_rmse"], "reference_solution") and needing(["cond_acc"], "labels")


def test_spec_accepts_exactly_the_choosable_registered_names():
    spec = RunConfig()
    spec.update({"metrics": ",".join(CHOOSABLE)})
    assert spec.metrics == list(CHOOSABLE) and "diverged_frac" not in CHOOSABLE   # every cell has it
    for bad in ("fdi", "diverged_frac"):
        with pytest.raises(SpecError, match=f"unknown metric '{bad}'; accepted: fid, kid"):
            RunConfig().update({"metrics": bad})
    # precision and recall are on demand only: in no default and no shipped suite
    assert not {"precision", "recall"} & set(RunConfig().metrics)
    from importlib.resources import files
    for suite in files("bench").joinpath("suites").iterdir():
        assert "precision" not in suite.read_text() and "recall" not in suite.read_text(), suite.name


def test_registration_is_checked():
    with pytest.raises(ValueError, match="needs"):
        Metric("x", "x", True, {"pixels"}, lambda d: {})
    with pytest.raises(ValueError, match="scale"):
        Metric("x", "x", True, {"samples"}, lambda d: {}, scale="percent")
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("fid", "FID", True, {"features"}, lambda d: {}))
    with pytest.raises(SpecError, match="unknown metric 'nope'"):
        get_metric("nope")


def test_compute_metrics_runs_a_shared_compute_once_and_respects_min_samples(registered):
    calls = []

    def both(data):
        calls.append(1)
        return {"t_a": 1.0, "t_b": 2.0, "t_extra": 3.0, "t_nan": math.nan}
    registered(Metric("t_a", "A", True, {"samples"}, both))
    registered(Metric("t_b", "B", True, {"samples"}, both))
    registered(Metric("t_big", "big", True, {"samples"}, lambda d: {"t_big": 1.0}, min_samples=10))
    x = torch.randn(6, 2)
    x[0] = math.nan
    out = compute_metrics(CellData(None, x), ["t_a", "t_b", "t_big"])
    assert len(calls) == 1                                  # one call gives both
    assert out["t_a"] == 1.0 and out["t_b"] == 2.0 and out["t_extra"] == 3.0   # a free extra value is kept
    assert "t_nan" not in out and math.isnan(out["t_big"])   # 5 finite samples < 10
    assert out["diverged_frac"] == pytest.approx(1 / 6)      # always computed
    with pytest.raises(SpecError, match="unknown metric"):
        compute_metrics(CellData(None, x), ["t_zzz"])


def test_a_registered_metric_is_run_written_and_tabled(tmp_path, registered):
    """Adding a metric is registering it: the spec accepts it, the runner computes it, results.csv has its
    column and fid_vs_nfe.md its table (table=True)."""
    def mean_norm(data):
        return {"t_norm": float(data.samples.to(torch.float64).norm(dim=1).mean())}
    registered(Metric("t_norm", "mean sample norm", True, {"samples"}, mean_norm, table=True))
    from bench.runner import Runner
    spec = RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[4], samples=60, metrics=["fid", "t_norm"])
    spec.validate()
    Runner(spec, tmp_path, log=lambda *_: None).run()
    df = pd.read_csv(tmp_path / "results.csv")
    x = torch.load(next((tmp_path / "samples").glob("*.pt")))["x"]
    assert df.loc[0, "t_norm"] == pytest.approx(float(x.to(torch.float64).norm(dim=1).mean()), rel=1e-12)
    from bench.tables import write_tables
    write_tables(df, tmp_path)
    assert "mean sample norm vs NFE" in (tmp_path / "fid_vs_nfe.md").read_text()


def test_run_cell_returns_a_cell_result(tmp_path):
    from bench.runner import Runner, plan
    spec = RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[3], samples=40, metrics=["fid"])
    runner = Runner(spec, tmp_path, log=lambda *_: None)
    cell = plan(spec)[0][0]
    res = runner.run_cell(cell)
    assert isinstance(res, CellResult) and not hasattr(runner, "_last_samples")
    assert res["fid"] == res.row["fid"] and dict(res) == res.row and {**res}["nfe"] == 3   # reads as its row
    assert res.samples["x"].shape == (40, 2) and res.samples["y"] is None
    index, feats = res.features                            # gmm2d: the data are the FID features
    assert np.array_equal(index, np.arange(40)) and np.array_equal(feats, res.samples["x"].double().numpy())
    json.dumps({**res, "identity": None})


def test_one_frechet_core():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(400, 6)) @ np.diag([1, 2, 1, 1, 0.5, 1]) + 0.3
    (mu1, s1), (mu2, s2) = core.moments(a), core.moments(b)
    ref = core.FrechetToReference(mu2, s2)
    one = ref.distance(mu1, s1)
    batched = float(ref(torch.from_numpy(mu1)[None], torch.from_numpy(s1)[None])[0])
    assert one == pytest.approx(core.frechet_distance(mu1, s1, mu2, s2), rel=1e-9)
    assert batched == pytest.approx(one, rel=1e-9)
    from bench import inception, nfe_changes
    assert inception.frechet(mu1, s1, mu2, s2) == one and inception.moments is not None
    assert nfe_changes.FrechetToReference is core.FrechetToReference
    m, c = inception.moments(a)
    assert np.array_equal(m, mu1) and np.array_equal(c, s1)
    assert inception.kid_subsets(a, b, subsets=5, subset_size=50) == core.kid(a, b, subsets=5, subset_size=50)
