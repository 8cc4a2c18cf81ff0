"""Shards (issue 18): a cell split into 1, 2 or 4 shards, run in process or in a process pool, gives the same
samples and metrics; a shard whose process is killed is rerun, a killed run resumes from its saved shards, and
nothing is computed or written twice."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.executors import LocalExecutor, PoolExecutor
from bench.runner import Runner
from bench.sharding import shard_ranges
from bench.spec import RunConfig

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["fid", "kid", "traj_rmse", "cond_acc", "precision", "recall"]
VALUES = METRICS + ["diverged_frac", "nfe_used"]
KEYS = ["model", "solver", "nfe", "guidance", "seed"]


def _spec(**kw):
    base = dict(models=["gmm2d", "digits"], solvers=["dpmpp-2m"], nfe=[6], guidance=[1.0], samples=512,
                batch_size=128, metrics=METRICS, reference_samples=300, kid_subsets=10, memory_limit_gb=0)
    return RunConfig(**{**base, **kw})


def _run(out, executor=None, **kw):
    r = Runner(_spec(**kw), out, log=lambda *_: None, executor=executor).run()
    assert not r["failed"], r["failed"]
    return r["results"].set_index(KEYS)


def _saved(out):
    """Every cell's preview samples and saved FID features, by cell file name."""
    out = Path(out)
    return {p.stem: (torch.load(p)["x"], np.load(out / "features" / f"{p.stem}.npz")["f"])
            for p in sorted((out / "samples").glob("*.pt"))}


def _same(a_dir, b_dir, a, b):
    pd.testing.assert_frame_equal(a[VALUES], b[VALUES], check_exact=False, rtol=1e-9, atol=0)
    sa, sb = _saved(a_dir), _saved(b_dir)
    assert sa.keys() == sb.keys() and len(sa) == 2
    for k in sa:
        assert torch.equal(sa[k][0], sb[k][0]) and np.array_equal(sa[k][1], sb[k][1])


def test_shard_ranges_are_whole_batches():
    assert shard_ranges(512, 128, 256) == [(0, 256), (256, 512)]
    assert shard_ranges(1000, 128, 300) == [(0, 256), (256, 512), (512, 768), (768, 1000)]   # rounded down
    assert shard_ranges(1000, 0) == [(0, 1000)]
    assert shard_ranges(50_000, 1024) == [(i, min(i + 8192, 50_000)) for i in range(0, 50_000, 8192)]


def test_one_two_four_shards_and_a_pool_agree(tmp_path):
    one = _run(tmp_path / "1", shard_samples=512)
    for n, size in ((2, 256), (4, 128)):
        many = _run(tmp_path / str(n), shard_samples=size)
        _same(tmp_path / "1", tmp_path / str(n), one, many)
    with PoolExecutor(2, threads=1) as pool:
        pooled = _run(tmp_path / "pool", executor=pool, shard_samples=128)
    _same(tmp_path / "1", tmp_path / "pool", one, pooled)
    assert not list(tmp_path.glob("*/shards/*/*.npz")), "a finished cell leaves no shard files"


KILLER = textwrap.dedent('''
    """A DDIM that kills its own process on the shard whose first row is KILL_AT, once per marker file."""
    import os
    import signal
    from pathlib import Path

    from solvers import register_solver
    from solvers.ddim import DDIM


    @register_solver("ddim-killer")
    class DDIMKiller(DDIM):
        def sample(self, denoiser, x_T, plan, generator=None):
            marker = Path(os.environ["KILL_MARKER"])
            if generator.start == int(os.environ["KILL_AT"]) and not marker.exists():
                marker.write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)
            count = Path(os.environ["KILL_MARKER"] + ".calls")
            with open(count, "a") as f:
                f.write(f"{generator.start}\\n")
            return super().sample(denoiser, x_T, plan, generator)
''')


def _killer(tmp_path):
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER)
    return plugin


def test_a_shard_whose_worker_is_killed_is_rerun(tmp_path, monkeypatch):
    plugin = _killer(tmp_path)
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "marker"))
    monkeypatch.setenv("KILL_AT", "256")
    kw = dict(models=["gmm2d"], solvers=["ddim-killer"], plugins=[str(plugin)], shard_samples=128)
    with PoolExecutor(2, threads=1) as pool:
        got = _run(tmp_path / "pool", executor=pool, **kw)
    assert (tmp_path / "marker").is_file(), "the worker was killed"
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "marker2"))
    (tmp_path / "marker2").write_text("no kill")
    want = _run(tmp_path / "local", **kw)
    pd.testing.assert_frame_equal(got[VALUES], want[VALUES], check_exact=False, rtol=1e-9, atol=0)
    assert len(list((tmp_path / "pool" / "cells").glob("*.json"))) == 1
    events = (tmp_path / "pool" / "events.log").read_text()
    assert "worker lost running shard [256, 384)" in events and events.count("computed ") == 1


def test_killed_run_resumes_from_its_saved_shards(tmp_path):
    """kill -9 of the whole run mid-cell: the rerun computes only the shards that were not saved."""
    plugin = _killer(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_MARKER": str(tmp_path / "marker"), "KILL_AT": "384"}
    cmd = [sys.executable, "-m", "bench", "run", "--plugin", str(plugin), "--models", "gmm2d", "--solvers",
           "ddim-killer", "--nfe", "5", "--samples", "512", "--batch-size", "128", "--shard-samples", "128",
           "--metrics", "fid,kid", "--kid-subsets", "10", "--out", str(out), "-q", "--no-plots"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL
    saved = sorted(p.name for p in out.glob("shards/*/*.npz"))
    assert saved == ["0-128.npz", "128-256.npz", "256-384.npz"]
    calls = tmp_path / "marker.calls"
    calls.write_text("")
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert calls.read_text().split() == ["384"], "only the shard that was not saved is computed again"
    assert not list(out.glob("shards/*/*.npz")) and len(list((out / "cells").glob("*.json"))) == 1
    whole = tmp_path / "whole"
    env["KILL_MARKER"] = str(tmp_path / "marker")   # exists: no kill
    cmd[cmd.index(str(out))] = str(whole)
    assert subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300).returncode == 0
    a, b = pd.read_csv(out / "results.csv"), pd.read_csv(whole / "results.csv")
    pd.testing.assert_frame_equal(a[KEYS + ["fid", "kid", "nfe_used"]], b[KEYS + ["fid", "kid", "nfe_used"]])


def test_a_bad_shard_file_is_moved_aside_and_recomputed(tmp_path):
    spec = _spec(models=["gmm2d"], metrics=["fid"], shard_samples=128)
    runner = Runner(spec, tmp_path / "r", log=lambda *_: None)
    from bench.runner import plan
    cell = plan(spec)[0][0]
    path = runner.store.shard_path(cell.key, 128, 256)
    path.parent.mkdir(parents=True)
    np.savez(path, range=np.array([0, 128, 6]), ok=np.ones(128, bool), wall_s=np.array(0.0))   # the wrong rows
    r = runner.run()
    assert not r["failed"] and not path.exists()
    assert list((tmp_path / "r" / "quarantine").rglob("128-256.npz"))
    ref = _run(tmp_path / "ref", models=["gmm2d"], metrics=["fid"], shard_samples=512)
    assert r["results"].fid.iloc[0] == ref.fid.iloc[0]


_DRIVER_STATE = "as imported"


class _WorkerReport:
    """A task telling what its worker process holds."""
    def run(self):
        from threadpoolctl import threadpool_info
        return _DRIVER_STATE, torch.get_num_threads(), max(i["num_threads"] for i in threadpool_info())


def test_a_cpu_pool_forks_with_the_drivers_state_and_its_share_of_threads(monkeypatch):
    from bench.executors import _start_method
    assert _start_method([]) == "fork" and _start_method(["cuda:0"]) == "spawn"
    monkeypatch.setattr(sys.modules[__name__], "_DRIVER_STATE", "loaded by the driver")
    with PoolExecutor(2, threads=1) as pool:
        reports = [f.result() for f in [pool.submit(_WorkerReport()) for _ in range(4)]]
    assert reports == [("loaded by the driver", 1, 1)] * 4


def test_local_executor_reports_a_task_error_without_raising():
    f = LocalExecutor().submit(None)   # run_task(None) fails: the Future carries it
    with pytest.raises(AttributeError):
        f.result()


def test_results_csv_is_written_once_per_run(tmp_path, monkeypatch):
    from bench.store import RunStore
    writes = []
    real = RunStore.write_results
    monkeypatch.setattr(RunStore, "write_results", lambda self: writes.append(1) or real(self))
    _run(tmp_path / "r", models=["gmm2d"], solvers=["ddim", "dpmpp-2m"], nfe=[4, 6], metrics=["fid"])
    assert len(writes) == 1
    assert len(json.loads((tmp_path / "r" / "run.json").read_text())["spec"]["solvers"]) == 2


def test_mixed_precision_network_in_bfloat16(tmp_path):
    """model_dtype casts the network at its boundary while the solver keeps float32 state; both dtypes are in the
    row and in the cell identity (another number, another cell)."""
    mixed = _run(tmp_path / "bf16", models=["digits"], metrics=["fid", "cond_acc"], model_dtype="bfloat16")
    plain = _run(tmp_path / "f32", models=["digits"], metrics=["fid", "cond_acc"])
    rows = pd.read_csv(tmp_path / "bf16" / "results.csv")
    assert (rows.dtype == "float32").all() and (rows.model_dtype == "bfloat16").all()
    cell = json.loads(next((tmp_path / "bf16" / "cells").glob("*.json")).read_text())
    assert cell["identity"]["protocol"]["model_dtype"] == "bfloat16"
    assert "model_dtype" not in json.loads(next((tmp_path / "f32" / "cells").glob("*.json")).read_text())[
        "identity"]["protocol"]   # unchanged identities for runs without it
    a, b = mixed.fid.iloc[0], plain.fid.iloc[0]
    assert np.isfinite(a) and a != b and abs(a - b) < 0.5 * b   # the same model, rounded differently
    assert mixed.cond_acc.iloc[0] > 0.9


@pytest.mark.parametrize("flags,line", [
    (["--model-dtype", "int8"], "model_dtype must be one of float32, float64, bfloat16, float16"),
    (["--executor", "dask"], "unknown executor 'dask'; accepted: local, pool, submitit, ray"),
    (["--shard-samples", "100", "--batch-size", "64", "--samples", "500"], "must be a multiple of batch_size"),
    (["--workers", "-1"], "workers must be an integer from 0 to 1024"),
])
def test_bad_execution_flags_are_one_line(tmp_path, capsys, flags, line):
    from bench.cli import main
    rc = main(["run", "--models", "gmm2d", "--nfe", "5", *flags, "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and line in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("engine,extra", [("ray", "ray"), ("submitit", "slurm")])
def test_an_engine_without_its_extra_names_the_install_command(tmp_path, capsys, monkeypatch, engine, extra):
    import importlib.util

    from bench.cli import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == engine else real(name, *a))
    rc = main(["run", "--models", "gmm2d", "--nfe", "5", "--executor", engine, "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"nfebench: error: --executor {engine} needs {engine}: pip install 'nfebench[{extra}]'"
    assert not (tmp_path / "r").exists()
