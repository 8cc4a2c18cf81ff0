"""Harness speed (issue 18): harness efficiency, metric cost, executor overhead, the speed-up of a process pool.

Not part of the test run. Either through pytest-benchmark (figures in each benchmark's extra_info):

    python -m pytest benchmarks/test_harness.py --benchmark-enable -p no:cacheprovider -s

or as a script that prints every figure, measured side by side in one run:

    python benchmarks/test_harness.py [efficiency|metrics|executors|workers ...]

- efficiency: on `digits` at batch 1,000, NFE 10, the time of the same number of bare network evaluations (the
  network alone, on the same batch and times) divided by the sampling time of a cell's batch (solver, Denoiser,
  noise); 1.0 is no overhead. Also the whole warm cell (sampling, feature pass, scoring) against its sampling.
- metrics: the cost of each metric per 1,000 `digits` samples, from their features (FID, KID with 100 subsets,
  precision/recall) and traj_rmse's dopri5 reference solve.
- executors: the overhead per task of each executor (a shard of 8 gmm2d samples: the task itself costs ~1 ms),
  run 16 at a time, minus the in-process time; pool, submitit's local executor and a local Ray.
- workers: a 40-cell `digits` grid with the default single process against `--workers 2` (one thread each).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _best(fn, repeat: int = 5) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


# ---- harness efficiency ----------------------------------------------------------------------------------------

def efficiency(solvers=("ddim", "dpmpp-2m", "dpmpp-3m", "unipc", "heun", "euler"), n: int = 1000,
               nfe: int = 10) -> dict:
    """{solver: bare network time / sampling time} on digits at batch n, NFE nfe."""
    from bench.shard import class_labels, initial_noise
    from models import load_model
    from solvers import Denoiser, get_solver

    model = load_model("digits")
    y = class_labels(model, n)
    x_T = initial_noise(model, 0, n, torch.float32)
    out = {}
    with torch.no_grad():
        for spec in solvers:
            solver = get_solver(spec)
            plan = solver.plan(model.schedule, nfe)
            times = []   # the times the solver evaluates the network at, recorded once
            forward = model.forward

            def record(x, t, y=None):
                times.append(t.clone())
                return forward(x, t, y)
            model.forward = record
            try:
                solver.sample(Denoiser(model, y=y, budget=nfe), x_T, plan)
            finally:
                del model.forward

            def bare():
                for t in times:
                    model.forward(x_T, t, y)

            def sample():
                solver.sample(Denoiser(model, y=y, budget=nfe), x_T, plan)
            bare(), sample()   # warm
            tb, ts = _best(bare), _best(sample)
            out[spec] = {"bare_s": tb, "sampling_s": ts, "efficiency": tb / ts}
    return out


def warm_cell(n: int = 1000, nfe: int = 10, metrics=("fid", "kid", "traj_rmse")) -> dict:
    """A warm digits cell with the library's default metrics: its whole time against its sampling time."""
    from bench.runner import Runner, plan
    from bench.spec import RunConfig

    with tempfile.TemporaryDirectory() as d:
        spec = RunConfig(models=["digits"], solvers=["dpmpp-2m"], nfe=[nfe], samples=n, metrics=list(metrics))
        runner = Runner(spec, d, log=lambda *_: None)
        cell = plan(spec)[0][0]
        runner.run_cell(cell)   # warm: models, classifier, reference features, the cached reference solve
        runner.run_cell(cell)
        totals, sampling = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            r = runner.run_cell(cell)
            totals.append(time.perf_counter() - t0)
            sampling.append(r["wall_s"])
    return {"cell_s": min(totals), "sampling_s": min(sampling), "ratio": min(totals) / min(sampling)}


# ---- metric cost -------------------------------------------------------------------------------------------------

def metric_cost(n: int = 1000) -> dict:
    """Seconds per n digits samples of each metric (features given), and of the traj_rmse reference solve."""
    from bench.cell_data import CellData, feature_pass
    from bench.metric_families import compute_metrics
    from bench.reference import solve_reference
    from bench.shard import class_labels, initial_noise
    from bench.spec import RunConfig
    from models import load_model
    from solvers import Denoiser, get_solver

    model = load_model("digits")
    y = class_labels(model, n)
    x_T = initial_noise(model, 0, n, torch.float32)
    solver = get_solver("dpmpp-2m")
    with torch.no_grad():
        x = solver.sample(Denoiser(model, y=y, budget=10), x_T, solver.plan(model.schedule, 10))
    out = {"feature pass": _best(lambda: feature_pass(model, x, RunConfig(), True))}
    for names in (["fid"], ["kid"], ["precision", "recall"], ["cond_acc"]):
        spec = RunConfig(metrics=names)

        def score():
            data = CellData(model, x, y=y, spec=spec)
            f, p = feature_pass(model, x, spec, True)
            data._cache.update(features=f, predictions=p)   # the shards' pass, done above once
            compute_metrics(data, names)
        score()
        out["/".join(names)] = _best(score)
    grid = solver.plan(model.schedule, 10).grid
    out["traj_rmse reference (dopri5)"] = _best(lambda: solve_reference(model, x_T, y, 1.0, grid[-1], 1e-6), 1)
    return out


# ---- executors ---------------------------------------------------------------------------------------------------

def executor_overhead(tasks: int = 16) -> dict:
    """Seconds per task over the in-process time, for each executor that is installed (16 tasks in flight)."""
    import concurrent.futures as cf

    from bench.executors import LocalExecutor, PoolExecutor
    from bench.shard import ShardTask
    from bench.spec import RunConfig

    config = RunConfig(metrics=["fid"], batch_size=8).to_dict()
    work = [ShardTask(config, "gmm2d", "ddim", 5, 1.0, 0, 8 * tasks, 8 * i, 8 * i + 8) for i in range(tasks)]

    def per_task(ex) -> float:
        list(cf.as_completed([ex.submit(t) for t in work[:2]]))   # warm: imports, the model
        t0 = time.perf_counter()
        for f in cf.as_completed([ex.submit(t) for t in work]):
            f.result()
        return (time.perf_counter() - t0) / tasks

    local = per_task(LocalExecutor())
    out = {"local (in process)": local}
    with PoolExecutor(2, threads=1) as pool:
        out["pool, 2 workers"] = per_task(pool) - local
    spec = RunConfig(workers=2)
    try:
        from bench.executor_submitit import SubmititExecutor
        with tempfile.TemporaryDirectory() as d:
            ex = SubmititExecutor(spec, Path(d))
            try:
                out["submitit (local)"] = per_task(ex) - local
            finally:
                ex.shutdown()
    except ImportError:
        out["submitit (local)"] = None
    try:
        import ray

        from bench.executor_ray import RayExecutor
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ex = RayExecutor(spec)
        try:
            out["ray (local)"] = per_task(ex) - local
        finally:
            ex.shutdown()
            ray.shutdown()
    except ImportError:
        out["ray (local)"] = None
    return out


def workers_speedup(workers: int = 2) -> dict:
    """A 40-cell digits grid (4 solvers x 2 NFEs x 5 seeds, 1,000 samples, FID/KID/cond_acc): the default single
    process against a pool of `workers` processes with one torch thread each."""
    from bench.runner import Runner
    from bench.spec import RunConfig

    def grid(**kw):
        base = dict(models=["digits"], solvers=["ddim", "dpmpp-2m", "unipc", "heun"], nfe=[6, 10],
                    seeds=[0, 1, 2, 3, 4], samples=1000, metrics=["fid", "kid", "cond_acc"])
        return RunConfig(**{**base, **kw})

    out = {}
    with tempfile.TemporaryDirectory() as d:
        Runner(grid(seeds=[9]), Path(d) / "warm", log=lambda *_: None).run()   # imports, models, classifier
        for name, spec in (("single process", grid()), (f"--workers {workers}", grid(workers=workers))):
            t0 = time.perf_counter()
            r = Runner(spec, Path(d) / name.replace(" ", "_"), log=lambda *_: None).run()
            out[name] = time.perf_counter() - t0
            assert r["cells"] == 40 and not r["failed"]
    out["speed-up"] = out["single process"] / out[f"--workers {workers}"]
    return out


# ---- pytest-benchmark entries --------------------------------------------------------------------------------------

def _record(benchmark, fn):
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v if not isinstance(v, dict) else dict(v) for k, v in result.items()})
    print(result)


def test_harness_efficiency(benchmark):
    _record(benchmark, efficiency)


def test_warm_cell_against_sampling(benchmark):
    _record(benchmark, warm_cell)


def test_metric_cost(benchmark):
    _record(benchmark, metric_cost)


def test_executor_overhead(benchmark):
    _record(benchmark, executor_overhead)


def test_workers_speedup(benchmark):
    _record(benchmark, workers_speedup)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    what = sys.argv[1:] or ["efficiency", "metrics", "executors", "workers"]
    torch.set_num_threads(2)
    for w in what:
        fn = {"efficiency": lambda: {**efficiency(), "warm cell": warm_cell()}, "metrics": metric_cost,
              "executors": executor_overhead, "workers": workers_speedup}[w]
        print(f"== {w}")
        for k, v in fn().items():
            if isinstance(v, dict):
                print(f"  {k:32s} " + ", ".join(f"{a} {b:.4g}" for a, b in v.items()))
            else:
                print(f"  {k:32s} {v if v is None else f'{v:.4g}'}")
