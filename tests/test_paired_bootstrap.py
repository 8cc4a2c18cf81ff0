"""examples/paired_fid_bootstrap.py: its samples and FIDs are the benchmark's, and its interval behaves."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paired_fid_bootstrap", ROOT / "examples" / "paired_fid_bootstrap.py")
pfb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pfb)


def test_fid_equals_the_benchmark_cells(tmp_path):
    from models import load_model
    out = tmp_path / "run"
    assert main(["run", "--models", "digits-oracle", "--solvers", "ddim,dpmpp-2m", "--nfe", "5", "--seeds", "1", "--guidance", "1",
                 "--samples", "300", "--metrics", "fid", "-q", "--no-plots", "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv").set_index("solver")["fid"]
    model, ref = load_model("digits-oracle"), pfb.reference_moments()
    for solver in ("ddim", "dpmpp-2m"):
        f = pfb.features(pfb.cell_samples(model, solver, 5, 1, 300))
        assert pfb.fid(f, ref) == pytest.approx(table[solver], rel=1e-5)


def test_interval_is_zero_for_equal_samples_and_excludes_zero_for_a_shift():
    rng = np.random.default_rng(0)
    ref_f = rng.normal(size=(2000, 4))
    ref = ref_f.mean(0), np.cov(ref_f, rowvar=False)
    a = rng.normal(size=(500, 4))
    out = pfb.paired_bootstrap({1: a, 2: a, 3: a + 0.5}, ref, replicates=50)
    assert out[(1, 2)] == (0.0, 0.0, 0.0)
    d, lo, hi = out[(2, 3)]
    assert lo > 0 and lo < d < hi          # a shift of 0.5 in 4 dimensions adds about 4 * 0.25 to FID
    assert d == pytest.approx(pfb.fid(a + 0.5, ref) - pfb.fid(a, ref))
