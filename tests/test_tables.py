"""Tables: best per column marked, booktabs LaTeX with a sound structure, intervals over seeds."""
import math

import pandas as pd
import pytest

from bench.tables import summarize, to_latex, to_markdown


def _frame():
    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.2), (2, -0.2)):
        for solver, base in (("ddim", 10.0), ("dpmpp-2m", 5.0), ("my_solver", 7.0)):
            for nfe in (5, 10):
                v = base / nfe * 10 + jitter
                if solver == "my_solver" and nfe == 10:
                    v = 1.0 + jitter  # best at NFE 10
                rows.append(dict(model="gmm2d", solver=solver, nfe=nfe, guidance=1.0, seed=seed, fid=v,
                                 diverged_frac=0.0))
    return pd.DataFrame(rows)


def test_summary_interval_is_student_t():
    s = summarize(_frame(), "fid")
    r = s[(s.solver == "ddim") & (s.nfe == 5)].iloc[0]
    assert r["mean"] == pytest.approx(20.0)
    assert r["ci95"] == pytest.approx(4.302652729911275 * 0.2 / math.sqrt(3), rel=1e-9)
    assert r["n_seeds"] == 3


def test_markdown_marks_best_per_column():
    md = to_markdown(_frame(), "fid")
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    header, rows = lines[0], {l.split("|")[1].strip(): l for l in lines[1:]}
    assert header.split("|")[2].strip() == "NFE 5"
    assert rows["dpmpp-2m"].split("|")[2].strip() == "**10.00 ± 0.50**"   # best at NFE 5 (2-digit half-width)
    assert rows["my_solver"].split("|")[3].strip() == "**1.00 ± 0.50**"   # best at NFE 10
    assert "**" not in rows["ddim"]
    assert "|---|---:|---:|" in md


def test_latex_booktabs_structure():
    tex = to_latex(_frame(), "fid")
    lines = [l for l in tex.splitlines() if l and not l.startswith("%")]
    assert lines[0] == "\\begin{tabular}{lrr}" and lines[-1] == "\\end{tabular}"
    assert lines[1] == "\\toprule" and lines[5] == "\\midrule" and lines[-2] == "\\bottomrule"
    assert lines[2] == " & \\multicolumn{2}{c}{NFE} \\\\" and lines[3] == "\\cmidrule(lr){2-3}"   # NFE header row
    body = lines[6:-2]
    assert len(body) == 3
    for l in [lines[4]] + body:
        assert l.endswith("\\\\") and l.count("&") == 2   # 3 columns
    assert "my\\_solver" in tex                        # escaped for LaTeX
    assert "\\textbf{1.00 $\\pm$ 0.50}" in tex
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1


def test_diverged_cells_are_flagged_not_averaged():
    df = _frame()
    df.loc[(df.solver == "ddim") & (df.nfe == 5), "fid"] = float("nan")
    df.loc[(df.solver == "ddim") & (df.nfe == 5), "diverged_frac"] = 1.0
    md = to_markdown(df, "fid")
    assert "div" in [l for l in md.splitlines() if l.startswith("| ddim")][0]
