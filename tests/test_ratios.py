"""Paired ratio tables: per-seed ratios averaged, sign agreement across seeds, error paths, the suite's ratios.md,
and the results README's ratio table equal to what the command computes from the committed results."""
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.ratios import paired_ratios, parse_pair, to_latex, to_markdown
from bench.tables import write_tables
from solvers.options import SpecError

ROOT = Path(__file__).resolve().parents[1]


def _frame():
    # base 'ddim'; 'fast' better on every seed at NFE 5, worse on every seed at NFE 10;
    # 'mixed' better on one seed only
    rows = []
    for seed, (f5, f10, m5) in enumerate([(4.0, 12.0, 8.0), (5.0, 11.0, 12.0), (4.5, 13.0, 11.0)]):
        for solver, v5, v10 in (("ddim", 10.0, 10.0), ("fast", f5, f10), ("mixed", m5, 10.0)):
            for nfe, v in ((5, v5), (10, v10)):
                rows.append(dict(model="digits", solver=solver, nfe=nfe, guidance=1.0, seed=seed, fid=v,
                                 cond_acc=v / 20, diverged_frac=0.0))
    return pd.DataFrame(rows)


def _row(r, pair, nfe):
    return r[(r.pair == pair) & (r.nfe == nfe)].iloc[0]


def test_ratio_is_mean_of_per_seed_ratios_with_sign_agreement():
    r = paired_ratios(_frame(), ["fast/ddim", "mixed/ddim"], "fid")
    a = _row(r, "fast/ddim", 5)
    assert a["ratio"] == pytest.approx((0.4 + 0.5 + 0.45) / 3) and a["agree"] == "+" and a["n_seeds"] == 3
    b = _row(r, "fast/ddim", 10)
    assert b["ratio"] == pytest.approx((1.2 + 1.1 + 1.3) / 3) and b["agree"] == "-"
    c = _row(r, "mixed/ddim", 5)
    assert c["ratio"] == pytest.approx((0.8 + 1.2 + 1.1) / 3) and c["agree"] == ""
    assert _row(r, "mixed/ddim", 10)["agree"] == ""          # equal on every seed: neither better nor worse


def test_higher_is_better_metric_flips_the_sign():
    r = paired_ratios(_frame(), ["fast/ddim"], "cond_acc")
    assert _row(r, "fast/ddim", 5)["agree"] == "-"           # lower accuracy: worse
    assert _row(r, "fast/ddim", 10)["agree"] == "+"


def test_one_seed_gives_no_sign_and_unpaired_seeds_are_dropped():
    df = _frame()
    df = df[~((df.solver == "fast") & (df.seed > 0))]
    r = paired_ratios(df, ["fast/ddim"], "fid")
    assert _row(r, "fast/ddim", 5)["n_seeds"] == 1 and _row(r, "fast/ddim", 5)["agree"] == ""
    assert _row(r, "fast/ddim", 5)["ratio"] == pytest.approx(0.4)


def test_markdown_and_latex_render_every_pair():
    md = to_markdown(_frame(), ["fast/ddim", "mixed/ddim"])
    assert "| `fast` / `ddim` | 1 | 0.45+ | 1.20- |" in md
    assert "| `mixed` / `ddim` | 1 | 1.03 | 1.00 |" in md
    tex = to_latex(_frame(), ["fast/ddim"])
    assert "\\toprule" in tex and "fast / ddim & 1 & 0.45+ & 1.20-" in tex


@pytest.mark.parametrize("text", ["ddim", "a/b/c", "/ddim", "ddim/ "])
def test_bad_pair_is_rejected(text):
    with pytest.raises(SpecError, match="MOD/BASE"):
        parse_pair(text)


def test_pair_naming_a_solver_not_in_the_run_lists_the_run_solvers():
    with pytest.raises(SpecError, match="solver 'heun' is not in the run; accepted: ddim, fast, mixed"):
        paired_ratios(_frame(), ["heun/ddim"])


def test_cli_ratio_errors_are_one_line_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _frame().to_csv(run / "results.csv", index=False)
    assert main(["table", str(run), "--ratio", "fast/heun"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "solver 'heun' is not in the run" in err
    assert main(["table", str(run), "--ratio", "fast"]) == 2
    assert "MOD/BASE" in capsys.readouterr().err
    assert main(["run", "--ratios", "a/b/c", "--out", str(tmp_path / "x")]) == 2
    assert "bad ratio pair 'a/b/c'" in capsys.readouterr().err
    assert main(["table", str(run), "--ratio", "fast/ddim", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "pair,model,guidance,nfe,ratio,n_seeds,agree"


def test_run_writes_ratios_md_for_the_pairs_present(tmp_path):
    logged = []
    write_tables(_frame(), tmp_path, ["fast/ddim", "heun/ddim"], log=logged.append)
    text = (tmp_path / "ratios.md").read_text()
    assert "`fast` / `ddim`" in text and "heun" not in text
    assert "conditional accuracy ratio" in text
    assert logged and "skipped 1 pair" in logged[0]


def test_time_shift_momentum_suite_names_its_pairs():
    from bench.spec import RunConfig
    spec = RunConfig.from_toml(ROOT / "bench" / "suites" / "time-shift-momentum.toml")
    assert "dpmpp-2m+hb/dpmpp-2m" in spec.ratios
    for pair in spec.ratios:
        assert all(s in spec.solvers for s in parse_pair(pair))


def test_readme_ratio_tables_are_what_the_command_computes():
    """Every row of the results README's ratio tables (time-shift and momentum; DC-Solver, FID and traj_rmse) equals a row
    computed from the committed results of a run holding both solvers of its pair."""
    readme = (ROOT / "results" / "README.md").read_text()
    rows = [l for l in readme.splitlines() if re.match(r"\| `[^`]+` / `[^`]+` \| \d", l)]
    pairs = list(dict.fromkeys(re.match(r"\| `([^`]+)` / `([^`]+)`", l).group(1, 2) for l in rows))
    assert {("dpmpp-2m+hb", "dpmpp-2m"), ("unipc+dc", "unipc")} <= set(pairs), "README ratio tables not found"
    computed = set()
    for run in ("time-shift-momentum", "standard"):
        df = pd.read_csv(ROOT / "results" / run / "results.csv")
        here = [f"{m}/{b}" for m, b in pairs if {m, b} <= set(df["solver"])]
        for metric in ("fid", "traj_rmse"):
            computed |= set(to_markdown(df, here, metric).splitlines())
    for line in rows:
        assert line in computed, line
