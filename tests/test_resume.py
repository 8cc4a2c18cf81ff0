"""Resume: a run killed with SIGKILL part-way and rerun ends with the same table as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--models", "gmm2d", "--solvers", "ddim,dpmpp-2m,dpmpp-3m,heun", "--nfe", "4,6,8,10,12,16",
        "--seeds", "0,1", "--samples", "400", "-q", "--no-plots"]
METRICS = ["fid", "kid", "traj_rmse", "diverged_frac", "nfe_used"]


def _run(out, wait=True):
    cmd = [sys.executable, "-m", "bench", "run", *ARGS, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cells(out):
    d = Path(out) / "cells"
    return list(d.glob("*.json")) if d.is_dir() else []


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run(full).returncode == 0
    n_total = len(_cells(full))
    assert n_total == 4 * 6 * 2

    proc = _run(killed, wait=False)
    deadline = time.time() + 300
    while len(_cells(killed)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_cells(killed))
    assert 0 < done_before < n_total, "the run must be killed part-way"

    r = _run(killed)
    assert r.returncode == 0, r.stderr
    assert f"{done_before} already done, {n_total - done_before} to run" in r.stderr or r.stderr == ""

    a = pd.read_csv(full / "results.csv")
    b = pd.read_csv(killed / "results.csv")
    assert len(b) == n_total and not b.duplicated(["model", "solver", "nfe", "guidance", "seed"]).any()
    keys = ["model", "solver", "nfe", "guidance", "seed"]
    pd.testing.assert_frame_equal(a[keys + METRICS], b[keys + METRICS])
    leftovers = [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_rerun_skips_finished_cells_and_says_so(tmp_path):
    out = tmp_path / "r"
    args = ["--models", "gmm2d", "--solvers", "ddim", "--nfe", "3,5", "--samples", "100", "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--out", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert "2 cells: 0 already done, 2 to run" in first.stderr
    again = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--nfe", "3,5,8", "--out", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert "3 cells: 2 already done, 1 to run" in again.stderr


def test_rerun_that_computes_nothing_keeps_run_json_and_writes_ratios(tmp_path):
    """Redrawing the tables of a finished run (here with a ratio pair added) keeps the provenance of the run
    that computed its cells."""
    from bench.cli import main
    out = tmp_path / "r"
    args = ["run", "--models", "gmm2d", "--solvers", "ddim,dpmpp-2m", "--nfe", "4,6", "--samples", "100",
            "-q", "--no-plots", "--out", str(out)]
    assert main(args) == 0
    meta = (out / "run.json").read_text()
    assert not (out / "ratios.md").exists()
    assert main(args + ["--ratios", "dpmpp-2m/ddim"]) == 0
    assert (out / "run.json").read_text() == meta
    assert "| `dpmpp-2m` / `ddim` | 1 |" in (out / "ratios.md").read_text()


def test_stale_temp_files_of_dead_writers_go_and_live_ones_stay(tmp_path):
    """Processes sharing a run directory each write through their own temp names; a run starting beside a live
    one removes only temp files whose writer is gone."""
    from bench.store import RunStore, atomic_write, temp_beside
    store = RunStore(tmp_path / "r")
    (tmp_path / "r" / "samples").mkdir(parents=True)
    dead = tmp_path / "r" / "samples" / ".a.pt.pid999999999.abcd.tmp"
    live = tmp_path / "r" / "samples" / f".b.pt.pid{os.getpid()}.abcd.tmp"
    dead.write_text("x")
    live.write_text("x")
    store.ensure()
    assert not dead.exists() and live.exists()
    target = tmp_path / "r" / "samples" / "c.pt"
    with temp_beside(target) as t1, temp_beside(target) as t2:
        assert t1 != t2                      # two writers of one cell never share a temp file
        Path(t1).write_text("1")
        Path(t2).write_text("2")
    assert target.read_text() == "1"         # the last rename wins; nothing is left behind
    assert not Path(t1).exists() and not Path(t2).exists()
    # written files get a plain open()'s mode, not the temp file's private 0600: results stay shareable
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    atomic_write(tmp_path / "r" / "results.csv", "a,b\n")
    assert (tmp_path / "r" / "results.csv").stat().st_mode & 0o777 == 0o666 & ~mask
