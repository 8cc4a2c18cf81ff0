"""A user's solver from outside the package runs end to end through the CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_plugin_example_through_cli(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--plugin", str(ROOT / "examples" / "my_solver.py"),
                        "--models", "gmm2d", "--solvers", "my-heun-x0,ddim", "--nfe", "4,16,32", "--samples", "300",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out / "results.csv")
    mine = df[df.solver == "my-heun-x0"].set_index("nfe")
    ddim = df[df.solver == "ddim"].set_index("nfe")
    assert list(mine.index) == [4, 16, 32] and (mine["nfe_used"] == mine.index).all()
    # second order: doubling the NFE cuts the trajectory error by more than first-order DDIM's factor
    ratio = lambda d: d.loc[16, "traj_rmse"] / d.loc[32, "traj_rmse"]  # noqa: E731
    assert ratio(mine) > ratio(ddim) + 0.5
    assert "my-heun-x0" in (out / "fid_vs_nfe.md").read_text()
    assert (out / "fid_gmm2d_g1.png").is_file()
    listed = subprocess.run([sys.executable, "-m", "bench", "list", "solvers", "--plugin",
                             str(ROOT / "examples" / "my_solver.py")], capture_output=True, text=True, cwd=tmp_path)
    assert "my-heun-x0" in listed.stdout


def test_missing_plugin_file_is_a_clean_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--plugin", "nope.py", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "plugin file not found: nope.py" in r.stderr and "Traceback" not in r.stderr
