"""Paired FID changes between NFEs (bench/nfe_changes.py, `nfebench table --changes`, spec `fid_changes`):
the bootstrap equals an explicit resampling, pairs samples by index when some diverged, averages seeds, reads
the run's own saved features, and refuses features that do not reproduce the table's FID."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import nfe_changes as nc
from bench.cli import main
from bench.metrics import frechet_distance
from bench.store import load_results, row_key


def cell_key(model, solver, nfe, guidance, seed, n_samples, out=None):
    """The file name of the run's cell with these coordinates (read from its results)."""
    df = load_results(out)
    r = df[(df.model == model) & (df.solver == solver) & (df.nfe == nfe) & (df.guidance == guidance)
           & (df.seed == seed) & (df.n_samples == n_samples)]
    assert len(r) == 1
    return row_key(r.iloc[0])

ROOT = Path(__file__).resolve().parents[1]


def _explicit_fid(f, counts_row, index, ref):
    """FID of the resampled cell the slow way: rows repeated by their count, numpy moments, scipy sqrtm."""
    rep = np.repeat(f, counts_row[index], axis=0)
    return frechet_distance(rep.mean(0), np.cov(rep, rowvar=False), *ref)


def test_weighted_replicates_equal_explicit_resampling_with_diverged_samples_dropped():
    rng = np.random.default_rng(1)
    ref_f = rng.normal(size=(3000, 3))
    ref = ref_f.mean(0), np.cov(ref_f, rowvar=False)
    n = 200
    counts = nc.bootstrap_counts(n, 7, seed=3)
    assert counts.shape == (7, n) and (counts.sum(1) == n).all()
    index = np.setdiff1d(np.arange(n), [0, 5, 17, 150])        # four samples diverged in this cell
    f = rng.normal(size=(len(index), 3)) * [1.0, 2.0, 0.5] + 0.3
    got = nc.cell_replicates(index, f, counts, nc.FrechetToReference(*ref)).numpy()
    want = [_explicit_fid(f, counts[b].numpy(), index, ref) for b in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_paired_changes_average_seeds_and_take_percentiles():
    fids = {(0, 5): 3.0, (0, 10): 2.0, (1, 5): 5.0, (1, 10): 4.5}
    reps = {(0, 5): torch.tensor([3.0, 3.1, 2.9, 3.0]), (0, 10): torch.tensor([2.0, 2.2, 2.0, 1.9]),
            (1, 5): torch.tensor([5.0, 5.0, 5.2, 4.8]), (1, 10): torch.tensor([4.5, 4.4, 4.7, 4.5])}
    change, lo, hi = nc.paired_changes(fids, reps, [(0, 5, 10), (1, 5, 10)])
    assert change == pytest.approx(-0.75)
    boot = np.array([(-1.0 - 0.5) / 2, (-0.9 - 0.6) / 2, (-0.9 - 0.5) / 2, (-1.1 - 0.3) / 2])
    assert (lo, hi) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def test_verdicts():
    rows = lambda *iv: pd.DataFrame([dict(nfe_a=a, nfe_b=b, lo=lo, hi=hi) for a, b, lo, hi in iv])
    assert nc.verdict(rows((5, 10, -3, -1), (10, 20, -0.5, -0.1))) == "falls at every step"
    assert nc.verdict(rows((5, 10, -3, -1), (10, 20, -0.1, 0.2))) == "no resolved rise"
    assert nc.verdict(rows((5, 10, 1, 3), (10, 20, -0.1, 0.2), (20, 50, 0.01, 0.2))) == "rises 5 → 10, 20 → 50"


def test_two_nfes_with_the_same_steps_read_same_samples(tmp_path, capsys):
    """ode-rk4 spends 4 NFE a step: budgets 4 and 5 give one step, the same samples, an exact zero change."""
    assert main(["run", "--models", "gmm2d", "--solvers", "ode-rk4", "--nfe", "4,5,8", "--samples", "200",
                 "--metrics", "fid", "-q", "--no-plots", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["table", str(tmp_path / "r"), "--changes"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| ode-rk4"))
    assert row.split(" | ")[1] == "0 (same samples)"
    assert "[" in row.split(" | ")[2]               # 5 -> 8: two steps, a real change with its interval


def _run(out, *extra):
    return main(["run", "--models", "gmm2d", "--solvers", "ddim,dpmpp-2m", "--nfe", "5,10,20", "--seeds", "0,1",
                 "--samples", "300", "--metrics", "fid", "-q", "--no-plots", "--out", str(out), *extra])


def test_run_writes_fid_changes_equal_to_an_explicit_bootstrap_of_its_samples(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--fid-changes") == 0
    text = (out / "fid_changes.md").read_text()
    assert "FID change between NFEs — gmm2d, no guidance" in text and "| ddim |" in text
    df = pd.read_csv(out / "results.csv")
    ch = nc.changes_frame(df, out)
    assert len(ch) == 2 * 2 and set(ch["n_seeds"]) == {2}    # 2 solvers x (5 -> 10, 10 -> 20), both seeds
    from models import load_model
    ref = nc.reference_moments(load_model("gmm2d"))
    row = ch[(ch.solver == "ddim") & (ch.nfe_a == 10)].iloc[0]
    fid = df.set_index(["solver", "nfe", "seed"])["fid"]
    assert row["change"] == pytest.approx(np.mean([fid[("ddim", 20, s)] - fid[("ddim", 10, s)] for s in (0, 1)]))
    # the same interval from the saved samples themselves (300 < 512: every sample is kept) the slow way
    boot = []
    per_seed = {}
    for s in (0, 1):
        counts = nc.bootstrap_counts(300, nc.REPLICATES, seed=s).numpy()
        x = {k: torch.load(out / "samples" / f"{cell_key('gmm2d', 'ddim', k, 1.0, s, 300, out)}.pt")["x"].double().numpy()
             for k in (10, 20)}
        per_seed[s] = [_explicit_fid(x[20], counts[b], np.arange(300), ref) -
                       _explicit_fid(x[10], counts[b], np.arange(300), ref) for b in range(nc.REPLICATES)]
    boot = (np.array(per_seed[0]) + np.array(per_seed[1])) / 2
    assert (row["lo"], row["hi"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), rel=1e-7)
    # the table command prints the same table, and csv carries the numbers
    assert main(["table", str(out), "--changes", "--format", "csv"]) == 0


def test_table_changes_on_a_digits_run_match_the_example_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pfb", ROOT / "examples" / "paired_fid_bootstrap.py")
    pfb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pfb)
    out = tmp_path / "run"
    assert main(["run", "--models", "digits-oracle", "--solvers", "dpmpp-2m", "--nfe", "5,10", "--seeds", "1",
                 "--samples", "300", "--metrics", "fid", "-q", "--no-plots", "--out", str(out)]) == 0
    assert not (out / "fid_changes.md").exists()           # not asked for
    capsys.readouterr()
    assert main(["table", str(out), "--changes"]) == 0
    md = capsys.readouterr().out
    ch = nc.changes_frame(pd.read_csv(out / "results.csv"), out)
    from models import load_model
    model = load_model("digits-oracle")
    feats = {k: pfb.features(pfb.cell_samples(model, "dpmpp-2m", k, 1, 300), "digits-oracle") for k in (5, 10)}
    change, lo, hi = pfb.paired_bootstrap(feats, pfb.reference_moments("digits-oracle"), nc.REPLICATES, seed=1)[(5, 10)]
    r = ch.iloc[0]
    assert (r["change"], r["lo"], r["hi"]) == pytest.approx((change, lo, hi), rel=1e-4)
    assert f"{r['change']:+.3g}" in md and "5 → 10" in md


def test_error_paths(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    capsys.readouterr()
    # features that do not reproduce the table's FID are refused, naming the cell
    key = cell_key("gmm2d", "ddim", 10, 1.0, 0, 300, out)
    z = dict(np.load(out / "features" / f"{key}.npz"))
    np.savez(out / "features" / f"{key}.npz", index=z["index"], f=z["f"] + 1.0)
    assert main(["table", str(out), "--changes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ddim NFE 10 seed 0" in err and "Traceback" not in err
    # a run asked for fid_changes.md still finishes (its cells and tables are kept) and says why it has none
    assert main(["run", "--models", "gmm2d", "--solvers", "ddim,dpmpp-2m", "--nfe", "5,10,20", "--seeds", "0,1",
                 "--samples", "300", "--metrics", "fid", "--no-plots", "--out", str(out), "--fid-changes"]) == 0
    assert "fid_changes.md not written: saved features of cell gmm2d ddim NFE 10" in capsys.readouterr().err
    assert not (out / "fid_changes.md").exists() and (out / "fid_vs_nfe.md").is_file()
    # a run without saved features (e.g. the committed results, which keep results.csv only)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.csv").write_text((out / "results.csv").read_text())
    assert main(["table", str(bare), "--changes"]) == 2
    assert "no saved FID features" in capsys.readouterr().err
    assert main(["table", str(out), "--changes", "--format", "latex"]) == 2
    assert "md or csv" in capsys.readouterr().err


def test_spec_key_fid_changes(tmp_path):
    from bench.spec import RunConfig
    from solvers.options import SpecError
    p = tmp_path / "s.toml"
    p.write_text('models = ["gmm2d"]\nfid_changes = true\n')
    assert RunConfig.from_toml(p).fid_changes is True
    p.write_text('models = ["gmm2d"]\nfid_changes = "sometimes"\n')
    with pytest.raises(SpecError, match="fid_changes"):
        RunConfig.from_toml(p)
