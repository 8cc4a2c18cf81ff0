"""Leaders per NFE (bench/leaders.py): ranks, the paired-bootstrap gap to the best equal to an explicit
resampling, resolved and tied verdicts on data whose answer is known, the seed-interval fallback, the budget
rule and higher-is-better metrics."""
import numpy as np
import pandas as pd
import pytest
import torch

from bench import nfe_changes as nc
from bench.leaders import PAIRED, SEEDS, best_per_nfe, leaders_frame
from bench.metrics import frechet_distance
from bench.store import row_key

N, DIM, REPS = 60, 2, 40
REF = (np.zeros(DIM), np.eye(DIM))


def _feats(shift, seed, solver_seed):
    """A cell's features: N samples of N(shift, I); solver_seed picks the draw (equal: the same samples)."""
    return np.random.default_rng([seed, solver_seed]).normal(size=(N, DIM)) + shift


def make_run(tmp_path, solvers, seeds=(0, 1, 2), nfes=(5,), features=True, model="toy"):
    """A run directory of one model: solvers = {name: (shift, draw id)}; each cell's FID is its features'."""
    frechet = nc.FrechetToReference(*REF)
    rows = []
    for name, (shift, draw) in solvers.items():
        for nfe in nfes:
            for seed in seeds:
                f = _feats(shift * 5 / nfe, seed, draw)
                fid = float(nc.weighted_fids(f, torch.ones(1, N), frechet)[0])
                row = dict(model=model, solver=name, nfe=nfe, nfe_used=nfe, guidance=1.0, seed=seed, n_samples=N,
                           fid=fid, cond_acc=0.5, diverged_frac=0.0, cell_id=f"c-{name}-{nfe}-{seed}")
                rows.append(row)
                if features:
                    nc.save_cell_features(tmp_path, row_key(row), np.arange(N), f)
    if features:
        nc.save_reference(tmp_path, model, *REF)
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "results.csv", index=False)
    return df


def test_paired_gap_equals_an_explicit_bootstrap_of_both_solvers(tmp_path):
    df = make_run(tmp_path, {"best": (0.0, 1), "worse": (0.6, 2)}, seeds=(0, 1))
    lead = leaders_frame(df, tmp_path, top=2, replicates=REPS)
    assert list(lead["solver"]) == ["best", "worse"] and list(lead["rank"]) == [1, 2]
    r = lead.iloc[1]
    assert r["basis"] == PAIRED and r["n_seeds"] == 2
    fid = df.set_index(["solver", "seed"])["fid"]
    assert r["gap"] == pytest.approx(np.mean([fid[("worse", s)] - fid[("best", s)] for s in (0, 1)]))
    per_seed = []
    for s in (0, 1):   # the same indices for both solvers of a seed, the slow way
        counts = nc.bootstrap_counts(N, REPS, seed=s).numpy()
        fw, fb = _feats(0.6, s, 2), _feats(0.0, s, 1)
        per_seed.append([frechet_distance(*_moments(np.repeat(fw, counts[b], 0)), *REF)
                         - frechet_distance(*_moments(np.repeat(fb, counts[b], 0)), *REF) for b in range(REPS)])
    want = np.percentile(np.mean(per_seed, 0), [2.5, 97.5])
    assert (r["gap_lo"], r["gap_hi"]) == pytest.approx(tuple(want), rel=1e-7)
    assert r["resolved"] and lead.iloc[0]["resolved"]           # a clearly worse runner-up: the lead is real
    assert np.isnan(lead.iloc[0]["gap_lo"]) and lead.iloc[0]["basis"] == PAIRED
    assert best_per_nfe(lead) == [("toy", 1.0, 5, "best", True)]


def _moments(f):
    return f.mean(0), np.cov(f, rowvar=False)


def test_identical_solvers_tie_and_the_tie_is_the_leaders_verdict(tmp_path):
    df = make_run(tmp_path, {"a": (0.2, 1), "copy": (0.2, 1), "far": (1.0, 3)})
    lead = leaders_frame(df, tmp_path, replicates=REPS)
    by = lead.set_index("solver")
    assert by.at["copy", "gap"] == 0 and (by.at["copy", "gap_lo"], by.at["copy", "gap_hi"]) == (0, 0)
    assert not by.at["copy", "resolved"] and not by.at["a", "resolved"]   # rank 1 is only as resolved as rank 2
    assert by.at["far", "resolved"] and by.at["far", "rank"] == 3


def test_same_distribution_other_draws_is_unresolved_and_a_shift_is_resolved(tmp_path):
    df = make_run(tmp_path, {"a": (0.0, 1), "b": (0.0, 2), "c": (0.8, 3)}, seeds=(0, 1, 2, 3))
    by = leaders_frame(df, tmp_path, replicates=REPS).set_index("solver")
    second = by[by["rank"] == 2].iloc[0]
    assert second["gap_lo"] < 0 < second["gap_hi"] and not second["resolved"]
    assert by.at["c", "resolved"] and by.at["c", "gap_lo"] > 0


def test_without_features_the_seed_intervals_decide(tmp_path):
    df = make_run(tmp_path, {"a": (0.0, 1), "b": (0.05, 2), "c": (2.0, 3)}, features=False)
    lead = leaders_frame(df, tmp_path, replicates=REPS)
    assert set(lead["basis"]) == {SEEDS}
    by = lead.set_index("solver")
    for s in ("b", "c"):
        lo = (by.at[s, "mean"] - by.at[s, "ci95"]) - (by.at["a", "mean"] + by.at["a", "ci95"])
        hi = (by.at[s, "mean"] + by.at[s, "ci95"]) - (by.at["a", "mean"] - by.at["a", "ci95"])
        assert (by.at[s, "gap_lo"], by.at[s, "gap_hi"]) == pytest.approx((lo, hi))
        assert by.at[s, "resolved"] == (lo > 0)      # the intervals do not overlap
    assert by.at["c", "resolved"]
    # no run directory at all: the same
    pd.testing.assert_frame_equal(leaders_frame(df, None), lead)


def test_features_that_do_not_reproduce_the_fid_are_not_used(tmp_path):
    df = make_run(tmp_path, {"a": (0.0, 1), "b": (0.8, 2)})
    df.loc[df["solver"] == "b", "fid"] += 1.0           # the saved features are some other cell's
    assert set(leaders_frame(df, tmp_path, replicates=REPS)["basis"]) == {SEEDS}


def test_budget_rule_top_and_flags():
    rows = []
    for seed in (0, 1):
        for solver, fid, used in (("a", 3.0, 5), ("b", 2.0, 4), ("adaptive", 0.5, 9), ("c", 4.0, 5), ("d", 5.0, 5)):
            rows.append(dict(model="m", solver=solver, nfe=5, nfe_used=used, guidance=1.0, seed=seed, n_samples=10,
                             fid=fid + 0.01 * seed, diverged_frac=0.0))
    lead = leaders_frame(pd.DataFrame(rows), None, top=3)
    assert list(lead["solver"]) == ["b", "a", "c"]          # over budget never ranked; the top 3 only
    assert list(lead["nfe_used_differs"]) == [True, False, False]
    assert list(lead["rank"]) == [1, 2, 3] and lead["resolved"].all()   # seed intervals +-0.06 around 2, 3, 4


def test_higher_is_better_metric_ranks_descending():
    rows = [dict(model="m", solver=s, nfe=n, nfe_used=n, guidance=4.0, seed=seed, n_samples=10, fid=1.0,
                 cond_acc=acc + 0.001 * seed, diverged_frac=0.0)
            for s, acc in (("low", 0.5), ("high", 0.9)) for n in (3, 6) for seed in (0, 1, 2)]
    lead = leaders_frame(pd.DataFrame(rows), None, metric="cond_acc")
    assert [b[3] for b in best_per_nfe(lead)] == ["high", "high"]
    second = lead[lead["rank"] == 2]
    assert (second["gap"] < 0).all() and second["resolved"].all()


def test_unknown_metric_is_one_clear_error():
    with pytest.raises(ValueError, match="metric 'nope' not in results"):
        leaders_frame(pd.DataFrame({"model": [], "solver": [], "fid": []}), None, metric="nope")
