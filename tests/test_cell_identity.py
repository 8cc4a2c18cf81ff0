"""A cell is everything that shapes it: reruns with another setup never mix into a run directory's tables;
budgets hold in every table; solver output is checked."""
import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.store import RunStore, load_results

BASE = ["run", "--models", "gmm2d", "--solvers", "ddim,dpmpp-2m", "--nfe", "4,8", "--seeds", "0", "--metrics",
        "fid", "-q", "--no-plots"]


def _err(capsys):
    return capsys.readouterr().err.strip()


def test_rerun_with_other_samples_is_refused_then_replaced(tmp_path, capsys):
    out = str(tmp_path / "R")
    assert main(BASE + ["--samples", "200", "--out", out]) == 0
    capsys.readouterr()
    before = load_results(out)
    # the case: same grid, other sample count -> refused, one line naming the difference and the way on
    assert main(BASE + ["--samples", "100", "--out", out]) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and "n_samples: 200 -> 100" in err and "--replace" in err and "--out" in err
    pd.testing.assert_frame_equal(load_results(out), before)      # nothing written, nothing lost
    # --replace: the old cells move aside (kept), the table holds only the new setup, one row per seed
    assert main(BASE + ["--samples", "100", "--out", out, "--replace"]) == 0
    df = load_results(out)
    assert len(df) == 4 and set(df["n_samples"]) == {100}
    assert len(list((tmp_path / "R" / "replaced").rglob("*.json"))) == 4


@pytest.mark.parametrize("flags,needle", [
    (["--dtype", "float64"], "dtype: float32 -> float64"),
    (["--metrics", "fid,kid"], "metrics"),
    (["--batch-size", "50"], "batch_size: 200 -> 50"),
])
def test_any_setting_that_shapes_numbers_is_part_of_the_identity(tmp_path, capsys, flags, needle):
    out = str(tmp_path / "R")
    assert main(BASE + ["--samples", "200", "--out", out]) == 0
    capsys.readouterr()
    assert main(BASE + ["--samples", "200", "--out", out] + flags) == 2
    err = _err(capsys)
    assert needle in err, err


def test_traj_rmse_settings_are_part_of_the_identity(tmp_path, capsys):
    out = str(tmp_path / "R")
    args = ["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "4", "--samples", "100", "-q", "--no-plots",
            "--metrics", "fid,traj_rmse", "--out", out]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--reference-rtol", "1e-5"]) == 2
    assert "reference_rtol" in _err(capsys)
    assert main(args + ["--reference-samples", "50"]) == 2
    assert "reference_samples: 100 -> 50" in _err(capsys)
    assert main(args + ["--reference-samples", "100"]) == 0      # all of 100 samples is what 0 means: same cell
    assert len((tmp_path / "R" / "events.log").read_text().splitlines()) == 1   # computed once


def test_canonical_solver_specs_are_one_cell(tmp_path, capsys):
    from solvers import get_solver
    assert get_solver("ddim:eta=0").spec == "ddim"
    assert get_solver("heun:rho=5,grid=karras").spec == get_solver("heun:grid=karras,rho=5").spec
    out = str(tmp_path / "R")
    args = ["run", "--models", "gmm2d", "--nfe", "4", "--samples", "100", "--metrics", "fid", "--no-plots",
            "--out", out]
    assert main(args + ["--solvers", "ddim,heun:rho=5,grid=karras"]) == 0
    capsys.readouterr()
    assert main(args + ["--solvers", "ddim:eta=0,heun:grid=karras,rho=5"]) == 0
    assert "2 cells: 2 already done, 0 to run" in _err(capsys)


def test_an_edited_plugin_is_a_new_cell(tmp_path, capsys):
    plugin = tmp_path / "mine.py"
    src = '''
from solvers import register_solver
from solvers.ddim import DDIM

@register_solver("mine-edit")
class Mine(DDIM):
    """DDIM under another name."""
    SCALE = {scale}

    def sample(self, denoiser, x_T, plan, generator=None):
        return super().sample(denoiser, x_T, plan, generator) * self.SCALE
'''
    plugin.write_text(src.format(scale=1.0))
    out = str(tmp_path / "R")
    args = ["run", "--plugin", str(plugin), "--models", "gmm2d", "--solvers", "mine-edit", "--nfe", "4", "--samples",
            "100", "--metrics", "fid", "-q", "--no-plots", "--out", out]
    assert main(args) == 0
    capsys.readouterr()
    plugin.write_text(src.format(scale=2.0))
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True)   # a new process
    assert r.returncode == 2 and "source_sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_tables_never_count_two_rows_of_one_seed_as_two_seeds(tmp_path, capsys):
    rows = [{"model": "gmm2d", "solver": "ddim", "nfe": 4, "nfe_used": 4, "guidance": 1.0, "seed": 0,
             "n_samples": n, "fid": f} for n, f in ((2000, 0.5), (1000, 0.6))]
    (tmp_path / "R").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "R" / "results.csv", index=False)
    assert main(["table", str(tmp_path / "R")]) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and "2 rows for gmm2d ddim NFE 4" in err and "2000, 1000" in err


def test_over_budget_cells_are_never_ranked_in_a_budget_column(tmp_path, capsys):
    """The issue's case: ode-dopri5 (adaptive, ~100+ NFE) beside ddim at NFE 5."""
    out = str(tmp_path / "R")
    assert main(["run", "--models", "gmm2d", "--solvers", "ode-dopri5,ddim", "--nfe", "5", "--samples", "200",
                 "--metrics", "fid", "--no-plots", "--out", out, "--ratios", "ode-dopri5/ddim"]) == 0
    capsys.readouterr()
    df = load_results(out)
    used = int(df.loc[df.solver == "ode-dopri5", "nfe_used"].iloc[0])
    assert used > 5
    md = (tmp_path / "R" / "fid_vs_nfe.md").read_text()
    budget_table = md.split("### Over budget")[0]
    assert "ode-dopri5" not in budget_table and "**" in budget_table      # ddim alone, and bold
    over = md.split("### Over budget")[1]
    assert f"| gmm2d | 1 | ode-dopri5 | 5 | {used} |" in over
    assert "ode-dopri5" not in (tmp_path / "R" / "fid_vs_nfe.tex").read_text()
    from bench import ratios
    assert ratios.paired_ratios(df, ["ode-dopri5/ddim"]).empty         # no ratio against an over-budget cell
    from bench.tables import to_csv
    csv = pd.read_csv(__import__("io").StringIO(to_csv(df)))
    assert bool(csv.loc[csv.solver == "ode-dopri5", "over_budget"].iloc[0])


def test_an_adaptive_plugin_is_shown_at_the_nfe_it_used(tmp_path, capsys):
    plugin = tmp_path / "adapt.py"
    plugin.write_text('''
from solvers import register_solver
from solvers.ddim import DDIM

@register_solver("greedy-adaptive")
class Greedy(DDIM):
    """DDIM on twice the steps, declared adaptive."""
    adaptive = True

    def sample(self, denoiser, x_T, plan, generator=None):
        from solvers.grids import make_grid
        grid = make_grid("logSNR", denoiser.schedule, 2 * plan.steps)
        return super().sample(denoiser, x_T, self.plan_on(denoiser.schedule, grid), generator)
''')
    out = str(tmp_path / "R")
    assert main(["run", "--plugin", str(plugin), "--models", "gmm2d", "--solvers", "greedy-adaptive,ddim", "--nfe",
                 "5", "--samples", "200", "--metrics", "fid", "-q", "--no-plots", "--out", out]) == 0
    md = (tmp_path / "R" / "fid_vs_nfe.md").read_text()
    assert "greedy-adaptive" not in md.split("### Over budget")[0]
    assert "| gmm2d | 1 | greedy-adaptive | 5 | 10 |" in md


BAD_PLUGIN = '''
import sys
import torch
from solvers import register_solver
from solvers.ddim import DDIM

@register_solver("{name}")
class Bad(DDIM):
    """A solver whose output is wrong."""

    def sample(self, denoiser, x_T, plan, generator=None):
        x = super().sample(denoiser, x_T, plan, generator)
        return {ret}
'''


@pytest.mark.parametrize("ret,needle", [
    ("x[: x.shape[0] // 2]", "returned a tensor of shape (50, 2)"),
    ("None", "returned NoneType"),
    ("x.double()", "dtype torch.float64"),
    ("sys.exit(0)", "SystemExit"),
])
def test_solver_output_is_checked_and_exit_fails_only_its_cell(tmp_path, capsys, ret, needle):
    plugin = tmp_path / "bad.py"
    name = f"bad-{abs(hash(ret)) % 10_000}"
    plugin.write_text(BAD_PLUGIN.format(name=name, ret=ret))
    out = str(tmp_path / "R")
    rc = main(["run", "--plugin", str(plugin), "--models", "gmm2d", "--solvers", f"{name},ddim", "--nfe", "4",
               "--samples", "100", "--metrics", "fid", "--no-plots", "--out", out])
    err = _err(capsys)
    assert rc == 1 and needle in err and "expected" in err or needle == "SystemExit" and needle in err, err
    df = load_results(out)
    assert list(df["solver"]) == ["ddim"]          # the other cell ran; the bad one wrote no row


def test_cells_record_identity_and_key(tmp_path):
    out = tmp_path / "R"
    assert main(BASE + ["--samples", "100", "--out", str(out)]) == 0
    rows = RunStore(out).read_cells_by_key()
    for key, row in rows.items():
        assert key.endswith(row["cell_id"]) and row["identity"]["protocol"]["n_samples"] == 100
    csv = pd.read_csv(out / "results.csv")
    assert "cell_id" in csv.columns and "identity" not in csv.columns
    assert np.isfinite(csv["fid"]).all()
