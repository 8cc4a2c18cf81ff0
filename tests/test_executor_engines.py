"""The submitit and Ray executors (bench/executor_submitit.py, bench/executor_ray.py): a shard run there is the same
bits as in the driver's process; a task's exception arrives as itself; a task whose process dies fails with
WorkerLost. Each engine's tests are skipped where it is not installed (extras .[slurm], .[ray])."""
import os
import sys
import time

import numpy as np
import pytest

from bench.executors import LocalExecutor, WorkerLost
from bench.shard import ShardTask
from bench.spec import RunConfig

TIMEOUT = 180   # seconds a test waits for one task (a fresh process imports torch)


class DieTask:
    """A task whose process dies before returning (run_task calls task.run())."""

    def run(self):
        os._exit(1)


def _by_value(cloudpickle_module):
    """Workers cannot import this test module (pytest imports it by path): pickle DieTask by value."""
    try:
        cloudpickle_module.register_pickle_by_value(sys.modules[__name__])
    except (ValueError, KeyError):   # not in sys.modules under its name: pickled by reference then
        pass


def shard_tasks(solver="dpmpp-2m"):
    config = RunConfig(metrics=["fid", "kid"], batch_size=128).to_dict()
    return [ShardTask(config=config, model="gmm2d", solver=solver, nfe=5, guidance=1.0, seed=0, n_samples=256,
                      start=a, stop=b) for a, b in ((0, 128), (128, 256))]


@pytest.fixture(scope="module")
def expected():
    with LocalExecutor() as ex:
        return [ex.submit(t).result() for t in shard_tasks()]


def check_engine(ex, expected):
    """The shards, a failing task and a dying task, all in flight together."""
    t0 = time.perf_counter()
    futures = [ex.submit(t) for t in shard_tasks()]
    bad = ex.submit(shard_tasks("no-such-solver")[0])
    dead = ex.submit(DieTask())
    got = [f.result(timeout=TIMEOUT) for f in futures]
    for g, e in zip(got, expected):
        assert (g.start, g.stop) == (e.start, e.stop)
        assert g.nfe_used == e.nfe_used
        for name in ("ok", "features", "preview"):
            a, b = getattr(g, name), getattr(e, name)
            assert a is not None and b is not None, name
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    with pytest.raises(Exception, match="no-such-solver") as info:
        bad.result(timeout=TIMEOUT)
    assert not isinstance(info.value, WorkerLost)
    with pytest.raises(WorkerLost):
        dead.result(timeout=TIMEOUT)
    return time.perf_counter() - t0


# ---- submitit (its local executor: no srun here) ------------------------------------------------------------

def test_submitit_local(tmp_path, expected, monkeypatch):
    submitit = pytest.importorskip("submitit")
    import cloudpickle

    from bench import executor_submitit
    from bench.executor_submitit import SubmititExecutor
    _by_value(cloudpickle)
    monkeypatch.setattr(executor_submitit.shutil, "which", lambda name: None)   # local even where srun exists
    ex = SubmititExecutor(RunConfig(workers=2), tmp_path)
    try:
        assert ex.mode == "local" and ex.parallelism == 2
        assert isinstance(ex._ex, submitit.LocalExecutor)
        wall = check_engine(ex, expected)
        print(f"submitit local: 4 tasks in {wall:.1f} s")
    finally:
        ex.shutdown()
    assert (tmp_path / "submitit").is_dir()   # the jobs' logs live in the run directory
    assert ex._thread is not None and not ex._thread.is_alive()


def test_submitit_shutdown_cancels(tmp_path):
    """A job still running at shutdown is cancelled and its Future does not hang."""
    pytest.importorskip("submitit")
    import concurrent.futures as cf

    from bench.executor_submitit import SubmititExecutor
    ex = SubmititExecutor(RunConfig(workers=1), tmp_path)
    fut = ex.submit(shard_tasks()[0])
    time.sleep(0.5)
    ex.shutdown()
    assert fut.done()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)


# ---- Ray (a local instance of 2 CPUs, started once) ---------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray(ray_cluster, expected):
    import ray.cloudpickle

    from bench.executor_ray import RayExecutor
    _by_value(ray.cloudpickle)
    ex = RayExecutor(RunConfig())
    try:
        assert ex.parallelism == 2 and not ex._started   # Ray's CPUs; a Ray it did not start is left running
        wall = check_engine(ex, expected)
        print(f"ray: 4 tasks in {wall:.1f} s")
    finally:
        ex.shutdown()
    assert ray_cluster.is_initialized()


def test_submitit_slurm_parameters(tmp_path, monkeypatch):
    """With srun on the PATH the jobs go to SLURM with the run's settings (checked on the sbatch file; nothing is
    submitted)."""
    pytest.importorskip("submitit")
    from bench.executor_submitit import SubmititExecutor
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("srun", "sbatch"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    spec = RunConfig(executor="submitit", slurm_partition="gpu", slurm_gpus_per_task=2, slurm_time_min=30,
                     slurm_array_parallelism=4)
    ex = SubmititExecutor(spec, tmp_path / "run")
    try:
        assert ex.mode == "slurm" and ex.parallelism == 2
        assert ex.folder == tmp_path / "run" / "slurm"
        text = ex._ex._executor._make_submission_file_text("python -m x", "uid")
        for line in ("--partition=gpu", "--gpus-per-node=2", "--time=30", "--cpus-per-task=8", "--nodes=1",
                     "--ntasks-per-node=1", "--job-name=nfebench"):
            assert f"#SBATCH {line}\n" in text, line
        assert ex._ex._executor.parameters["array_parallelism"] == 4
    finally:
        ex.shutdown()


# ---- a whole grid through each engine: the cells equal the in-process run's ----------------------------------

def _grid(out, executor):
    import pandas as pd

    from bench.runner import Runner
    spec = RunConfig(models=["gmm2d", "digits"], solvers=["dpmpp-2m"], nfe=[6], samples=512, batch_size=128,
                     shard_samples=256, metrics=["fid", "kid", "traj_rmse", "cond_acc"], reference_samples=200,
                     kid_subsets=10, memory_limit_gb=0)
    r = Runner(spec, out, log=lambda *_: None, executor=executor).run()
    assert not r["failed"], r["failed"]
    feats = {p.stem: np.load(p)["f"] for p in sorted((out / "features").glob("*.npz")) if "reference-" not in p.name}
    cols = ["model", "solver", "nfe", "seed", "fid", "kid", "traj_rmse", "cond_acc", "nfe_used"]
    return pd.read_csv(out / "results.csv")[cols], feats


@pytest.mark.slow   # a minute or more: submitit's local jobs each start a Python with torch
@pytest.mark.parametrize("engine", ["submitit", "ray"])
def test_a_grid_on_each_engine_equals_the_in_process_run(engine, tmp_path, request, monkeypatch):
    import pandas as pd
    want, want_f = _grid(tmp_path / "local", None)
    if engine == "submitit":
        pytest.importorskip("submitit")
        from bench import executor_submitit
        monkeypatch.setattr(executor_submitit.shutil, "which", lambda name: None)
        ex = executor_submitit.SubmititExecutor(RunConfig(workers=2), tmp_path / "logs")
    else:
        request.getfixturevalue("ray_cluster")
        from bench.executor_ray import RayExecutor
        ex = RayExecutor(RunConfig())
    try:
        got, got_f = _grid(tmp_path / engine, ex)
    finally:
        ex.shutdown()
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=0)
    assert got_f.keys() == want_f.keys() and all(np.array_equal(got_f[k], want_f[k]) for k in want_f)
