"""Kill -9 at random moments, two processes on one run directory, and a rerun: the results equal an uninterrupted
run's, and no cell is computed twice."""
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--models", "gmm2d", "--solvers", "ddim,dpmpp-2m,heun,ode-rk4", "--nfe", "4,8,12,16", "--seeds", "0,1",
        "--samples", "300", "--metrics", "fid,kid,traj_rmse", "-q", "--no-plots"]
KEYS = ["model", "solver", "nfe", "guidance", "seed"]
VALUES = ["fid", "kid", "traj_rmse", "nfe_used", "diverged_frac", "cell_id"]
N_CELLS = 4 * 4 * 2


def _cmd(out):
    return [sys.executable, "-m", "bench", "run", *ARGS, "--out", str(out)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _computed(out) -> Counter:
    log = Path(out) / "events.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    return Counter(line.split()[-1] for line in lines if " computed " in line)


def _results(out):
    return pd.read_csv(Path(out) / "results.csv").sort_values(KEYS).reset_index(drop=True)[KEYS + VALUES]


def test_kills_concurrency_and_rerun_match_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    assert subprocess.run(_cmd(full), cwd=ROOT, env=_env(), capture_output=True, timeout=600).returncode == 0
    expected = _results(full)
    assert len(expected) == N_CELLS

    # 1. SIGKILL at random moments, six times, then a rerun to the end
    killed, rng = tmp_path / "killed", random.Random(16)
    progress = []
    def done():
        return len(list((killed / "cells").glob("*.json"))) if (killed / "cells").is_dir() else 0

    for _ in range(6):
        # kill at a random moment after the process has made some progress (a cell, or a random share of one)
        p = subprocess.Popen(_cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start, deadline = done(), time.time() + 120
        while done() == start and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        progress.append(done())
    assert any(0 < p < N_CELLS for p in progress), progress   # kills landed part-way (a fast machine may finish)
    r = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(_results(killed), expected)
    assert max(_computed(killed).values()) == 1           # a cell is written once: a killed one was never finished
    assert not [p for p in killed.rglob("*.tmp")]

    # 2. two processes on one directory share the grid: each cell computed by exactly one of them
    both = tmp_path / "both"
    procs = [subprocess.Popen(_cmd(both), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    counts = _computed(both)
    assert len(counts) == N_CELLS and set(counts.values()) == {1}
    pids = Counter(line.split()[1] for line in (both / "events.log").read_text().splitlines())
    assert len(pids) == 2, pids                            # both did work
    pd.testing.assert_frame_equal(_results(both), expected)

    # 3. a rerun computes nothing and changes nothing
    r = subprocess.run(_cmd(both), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and sum(_computed(both).values()) == N_CELLS
    pd.testing.assert_frame_equal(_results(both), expected)
