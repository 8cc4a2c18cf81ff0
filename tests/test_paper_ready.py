"""Paper-ready tables and plots: consistent digits, the NFE header row, cells that spent fewer NFE than their
column marked, asked-for metrics that could not be computed said so, the FID-dimension warning, and `nfebench
plot`'s --solvers, --format, --label, --baseline/--band with their error lines."""
import math

import matplotlib
import pandas as pd
import pytest
from scipy import stats

from bench.cli import main
from bench.plots import metric_vs_nfe, paired
from bench.runner import Runner
from bench.spec import RunConfig
from bench.tables import mean_pm, summarize, to_latex, to_markdown, write_tables

GRID = ["--models", "gmm2d", "--nfe", "4,5", "--seeds", "0,1", "--metrics", "fid", "--samples", "40", "-q",
        "--no-plots"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "r"
    assert main(["run", *GRID, "--solvers", "ddim,ode-rk4,dpmpp-2m", "--out", str(out)]) == 0
    return out


def _frame(nfe_used=None):
    """Two solvers, NFE 5 and 10, three seeds; 'rk' spent 4 at NFE 5 when nfe_used says so."""
    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.3), (2, -0.3)):
        for solver, base in (("ddim", 12.0), ("rk", 4.26)):
            for nfe in (5, 10):
                used = nfe_used if solver == "rk" and nfe == 5 and nfe_used else nfe
                rows.append(dict(model="gmm2d", solver=solver, nfe=nfe, nfe_used=used, guidance=1.0, seed=seed,
                                 fid=base * 5 / nfe + jitter * (2 if solver == "ddim" else 1), cond_acc=math.nan,
                                 kid=0.01 + 0.001 * seed, diverged_frac=0.0))
    return pd.DataFrame(rows)


CARD = {"models": {"gmm2d": {"conditional": False, "feature_extractor": "data", "feature_dim": 2}},
        "metrics": ["fid", "kid", "cond_acc"], "samples": 1000, "seeds": [0, 1, 2]}


@pytest.mark.parametrize("mean,hw,text", [
    (12.0, 1.97, "12.0 ± 2.0"), (4.26, 0.578, "4.26 ± 0.58"), (342.0, 21.4, "342 ± 21"),
    (4567.0, 123.0, "4570 ± 120"), (2.3456, 0.0123, "2.346 ± 0.012"), (3.0, 0.996, "3.0 ± 1.0"),
    (0.987, 0.0034, "0.9870 ± 0.0034"), (-0.001, 0.05, "-0.001 ± 0.050"), (5.0, math.nan, "5")])
def test_interval_to_two_digits_and_mean_to_its_place(mean, hw, text):
    assert mean_pm(mean, hw, "fid") == text


def test_small_values_share_a_power_of_ten():
    assert mean_pm(1.234e-5, 3.4e-6, "traj_rmse") == "(1.23 ± 0.34)e-5"
    assert mean_pm(1.234e-5, 3.4e-6, "traj_rmse", "$\\pm$", latex=True) == "(1.23 $\\pm$ 0.34)$\\times 10^{-5}$"


def test_markdown_and_latex_use_the_same_digits():
    md, tex = to_markdown(_frame(), "fid"), to_latex(_frame(), "fid")
    hw = stats.t.ppf(0.975, 2) * 0.6 / math.sqrt(3)     # ddim's seeds: 12, 12.6, 11.4 at NFE 5
    assert mean_pm(12.0, hw, "fid") == "12.0 ± 1.5"
    assert "| ddim | 12.0 ± 1.5 |" in md and "ddim & 12.0 $\\pm$ 1.5 &" in tex


def test_latex_has_an_nfe_header_row():
    tex = to_latex(_frame(), "fid").splitlines()
    i = tex.index("\\toprule")
    assert tex[i + 1:i + 4] == [" & \\multicolumn{2}{c}{NFE} \\\\", "\\cmidrule(lr){2-3}", "Solver & 5 & 10 \\\\"]


def test_cells_that_spent_fewer_nfe_are_marked():
    md = to_markdown(_frame(nfe_used=4), "fid")
    row = next(l for l in md.splitlines() if l.startswith("| rk |")).split("|")
    assert row[2].strip() == "**4.26 ± 0.75 †4**" and "†" not in row[3]
    assert "† the solver spent fewer NFE than its column's budget" in md
    assert "†" not in next(l for l in md.splitlines() if l.startswith("| ddim |"))
    tex = to_latex(_frame(nfe_used=4), "fid")
    assert "\\textbf{4.26 $\\pm$ 0.75$^{\\dagger 4}$}" in tex and "\\footnotesize $^\\dagger$ the solver" in tex
    assert "†" not in to_markdown(_frame(), "fid") and "dagger" not in to_latex(_frame(), "fid")


def test_asked_for_metric_never_computed_says_why():
    md = to_markdown(_frame(), "cond_acc", card=CARD)
    assert "n/a: conditional accuracy was asked for and could not be computed: gmm2d is unconditional" in md
    assert "| ddim |" not in md                      # one line, not a grid of blanks
    assert "n/a: conditional accuracy was not computed for these cells." in to_markdown(_frame(), "cond_acc")


def test_one_missing_cell_is_na_and_a_diverged_one_stays_div():
    df = _frame()
    df.loc[(df.solver == "rk") & (df.nfe == 10), "kid"] = math.nan      # no sample diverged: not computed
    df.loc[(df.solver == "ddim") & (df.nfe == 10), ["kid", "diverged_frac"]] = [math.nan, 1.0]
    md = to_markdown(df, "kid", card=CARD)
    rows = {l.split("|")[1].strip(): l.split("|") for l in md.splitlines() if l.startswith("| ") and "NFE" not in l}
    assert rows["rk"][3].strip() == "n/a" and rows["ddim"][3].strip() == "div"
    assert "n/a: KID was asked for and could not be computed." in md
    assert "n/a: KID was not asked for" in to_markdown(df, "kid", card={**CARD, "metrics": ["fid"]})


def test_write_tables_shows_an_asked_metric_without_values(tmp_path):
    write_tables(_frame(), tmp_path, card=CARD)
    md = (tmp_path / "fid_vs_nfe.md").read_text()
    assert "### conditional accuracy vs NFE — gmm2d, no guidance" in md and "gmm2d is unconditional" in md
    write_tables(_frame(), tmp_path, card={**CARD, "metrics": ["fid"]})
    assert "conditional accuracy" not in (tmp_path / "fid_vs_nfe.md").read_text()


def test_fid_over_fewer_samples_than_dimensions_warns(tmp_path):
    card = {**CARD, "samples": 100, "models": {"digits": {"feature_extractor": "digits-classifier",
                                                          "feature_dim": 128, "conditional": True}}}
    df = _frame().assign(model="digits")
    note = "FID of digits over 100 samples in 128-dimensional digits-classifier features"
    assert note in to_markdown(df, "fid", card=card) and note in to_latex(df, "fid", card=card)
    assert note not in to_markdown(df, "fid", card={**card, "samples": 128})
    logs = []   # at run time: one line before any cell (gmm2d's features are 2-d: one sample is fewer)
    Runner(RunConfig(models=["gmm2d"], solvers=["ddim"], nfe=[2], samples=1, metrics=["fid"]), tmp_path,
           log=logs.append).run()
    assert logs[0].startswith("warning: FID of gmm2d over 1 samples in 2-dimensional data space")


def test_paired_band_is_the_per_seed_difference():
    """'fast' beats ddim on every seed by 1.0 +- 0.1 while the seeds move both by +-3: the solvers' own bands
    overlap; the paired difference's band excludes zero."""
    rows = []
    for seed, (shift, d) in enumerate([(0.0, -1.0), (3.0, -0.9), (-3.0, -1.1)]):
        for solver, v in (("ddim", 10.0 + shift), ("fast", 10.0 + shift + d)):
            rows.append(dict(model="gmm2d", solver=solver, nfe=5, nfe_used=5, guidance=1.0, seed=seed, fid=v,
                             diverged_frac=0.0))
    df = pd.DataFrame(rows)
    own = summarize(df, "fid").set_index("solver")
    assert own.at["fast", "mean"] + own.at["fast", "ci95"] > own.at["ddim", "mean"] - own.at["ddim", "ci95"]
    diff = summarize(paired(df, "fid", "ddim", "diff"), "fid").set_index("solver").loc["fast"]
    assert diff["mean"] == pytest.approx(-1.0, abs=1e-12)
    assert diff["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3), rel=1e-9)
    assert diff["mean"] + diff["ci95"] < 0
    ratio = summarize(paired(df, "fid", "ddim", "ratio"), "fid").set_index("solver").loc["fast"]
    assert ratio["mean"] == pytest.approx((9.0 / 10 + 12.1 / 13 + 5.9 / 7) / 3, rel=1e-12)


def test_plot_baseline_file_and_axis(tmp_path):
    rows = [dict(model="gmm2d", solver=s, nfe=n, nfe_used=n, guidance=1.0, seed=k, fid=f + k, diverged_frac=0.0)
            for s, f in (("ddim", 3.0), ("fast", 2.0)) for n in (4, 8) for k in range(3)]
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = metric_vs_nfe(pd.DataFrame(rows), "fid", tmp_path, fmt="svg", baseline="ddim", band="ratio",
                              labels={"gmm2d": "G"})
    assert [p.name for p in paths] == ["fid_ratio-vs-ddim_G_g1.svg"]
    svg = paths[0].read_text()
    assert "FID / FID of ddim, paired by seed" in svg and "ddim (baseline)" in svg and "FID ratio to ddim" in svg


def test_plot_solvers_format_label(run, tmp_path, capsys):
    out = tmp_path / "f"
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        assert main(["plot", str(run), "--solvers", "ddim,dpmpp-2m", "--format", "svg", "--label", "gmm2d=G",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "fid_G_g1.svg"), str(out / "samples_G_g1.svg")]
    svg = (out / "fid_G_g1.svg").read_text()
    assert "FID vs NFE — G" in svg and "dpmpp-2m" in svg and "ode-rk4" not in svg and "hollow" not in svg
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        assert main(["plot", str(run), "--format", "svg", "--out", str(out)]) == 0
    assert "hollow: fewer NFE than its column" in (out / "fid_gmm2d_g1.svg").read_text()   # ode-rk4 at NFE 5
    assert main(["plot", str(run), "--format", "pdf", "--solvers", "ode-rk4", "--out", str(out)]) == 0
    assert (out / "fid_gmm2d_g1.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["plot", str(run), "--baseline", "ddim", "--out", str(out)]) == 0
    assert str(out / "fid_diff-vs-ddim_gmm2d_g1.png") in capsys.readouterr().out


@pytest.mark.parametrize("argv,needles", [
    (["--solvers", "ddim,dpmpp-9m"], ["solver 'dpmpp-9m' is not in the run", "it has: ddim, dpmpp-2m, ode-rk4"]),
    (["--label", "gmm3d=G"], ["model 'gmm3d' is not in the run", "gmm2d"]),
    (["--label", "gmm2d"], ["bad --label 'gmm2d'", "MODEL=SHORT"]),
    (["--band", "diff"], ["--band diff pairs each solver with a baseline", "--baseline SOLVER"]),
    (["--baseline", "ddim", "--band", "ci"], ["--baseline draws paired bands"]),
    (["--baseline", "heun"], ["solver 'heun' is not in the run"]),
    (["--format", "jpg"], ["invalid choice: 'jpg'", "png"]),
])
def test_plot_bad_options_one_line_exit_2(run, tmp_path, capsys, argv, needles):
    assert main(["plot", str(run), *argv, "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nfebench: error:")
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "f").exists()   # refused before any drawing
