"""Where shards run: one interface over existing engines. nfebench schedules nothing itself.

An executor takes tasks (bench/shard.py: `ShardTask`, `ReferenceTask`; each runs through `run_task`) and
returns a `concurrent.futures.Future` per task; the driver (bench/runner.py) waits on them, saves each result
and alone writes the run directory. Workers return their results and write nothing, so they need a shared file
system only to read models and plugin files.

- `local` (default): in the driver's process, one task at a time;
- `pool`: a process pool of `workers` processes (forked on CPU, spawned over CUDA devices;
  `torch.set_num_threads(cpus // workers)` each); with `devices` one worker per device, each pinned to its device;
- `submitit`: SLURM job arrays through submitit when `srun` is on the PATH, submitit's local executor otherwise
  (bench/executor_submitit.py; extra `.[slurm]`);
- `ray`: a Ray task per shard (bench/executor_ray.py; extra `.[ray]`).

A worker that dies (killed, out of memory) fails its futures with `WorkerLost`; the driver reruns those tasks
on a fresh pool (`restart`), and a task that kills its worker twice fails its cell.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from concurrent.futures.process import BrokenProcessPool

from solvers.options import SpecError

from .executor_base import Executor, LocalExecutor, WorkerLost  # noqa: F401  (the interface, re-exported)
from .shard import run_task

EXTRAS = {"submitit": ("submitit", "slurm"), "ray": ("ray", "ray")}
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(threads: int, devices):
    import torch
    from threadpoolctl import threadpool_limits

    from . import shard
    torch.set_num_threads(max(1, threads))
    threadpool_limits(max(1, threads))   # numpy's BLAS too (a forked worker keeps the driver's pool size)
    if devices is not None:
        shard.WORKER_DEVICE[:] = [devices.get()]


class PoolExecutor(Executor):
    """A pool of worker processes (`concurrent.futures.ProcessPoolExecutor`; `_start_method` says fork or spawn)."""
    name = "pool"
    local_workers = True

    def __init__(self, workers: int = 0, devices: list[str] | None = None, threads: int = 0):
        self.devices = list(devices or [])
        _check_devices(workers, self.devices)
        self.parallelism = workers or len(self.devices) or os.cpu_count() or 1
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.parallelism)
        self._pool = None
        self._start()

    def _start(self):
        ctx = mp.get_context(_start_method(self.devices))
        queue = None
        if self.devices:
            queue = ctx.Manager().Queue()
            for d in self.devices:
                queue.put(d)
        self._pool = cf.ProcessPoolExecutor(self.parallelism, mp_context=ctx, initializer=_init_worker,
                                            initargs=(self.threads, queue))
        # every worker starts now (a spawned one imports torch while the driver goes on), its BLAS and OpenMP
        # pools at its share of the cores: a spawned process reads these when numpy and torch load (a forked one
        # is limited in _init_worker), and idle BLAS threads spinning beside the other workers cost more than
        # they give
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: str(self.threads) for k in _THREAD_VARS})
        try:
            for _ in range(self.parallelism):
                self._pool.submit(int)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def submit(self, task) -> cf.Future:
        out: cf.Future = cf.Future()
        gen = self.generation
        try:
            inner = self._pool.submit(run_task, task)
        except BrokenProcessPool as e:
            out.set_exception(WorkerLost(f"a pool worker died ({e})", gen))
            return out

        def relay(f):
            if f.cancelled():
                out.set_exception(WorkerLost("cancelled by a pool restart", gen))
                return
            e = f.exception()
            if isinstance(e, BrokenProcessPool):
                out.set_exception(WorkerLost(f"a pool worker died ({e})", gen))
            elif e is not None:
                out.set_exception(e)
            else:
                out.set_result(f.result())
        inner.add_done_callback(relay)
        return out

    def restart(self):
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.generation += 1
        self._start()

    def shutdown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _start_method(devices) -> str:
    """Fork where it is safe: a forked worker starts in milliseconds with the driver's imports and loaded models
    (a spawned one pays seconds of imports and loads each model again). CUDA does not survive a fork, so a pool
    over devices, or a driver that has touched CUDA, spawns."""
    import torch
    if devices or torch.cuda.is_initialized() or "fork" not in mp.get_all_start_methods():
        return "spawn"
    return "fork"


def _engine(spec) -> str:
    """The executor a RunConfig asks for: `workers` or `devices` alone turn `local` into `pool`."""
    if spec.executor == "local" and (spec.workers > 1 or spec.devices):
        return "pool"
    return spec.executor


def _check_devices(workers: int, devices: list):
    if devices and workers and workers != len(devices):
        raise SpecError(f"--workers {workers} with {len(devices)} --devices: one worker per device "
                        f"(leave --workers out, or give {workers} devices)")


def make_executor(spec, log_dir=None) -> Executor:
    """The executor a RunConfig asks for (`_engine`); check_executor has checked its settings."""
    name = _engine(spec)
    if name == "local":
        return LocalExecutor()
    if name == "pool":
        return PoolExecutor(spec.workers, spec.devices)
    if name == "submitit":
        from .executor_submitit import SubmititExecutor
        return SubmititExecutor(spec, log_dir)
    from .executor_ray import RayExecutor
    return RayExecutor(spec)


def check_executor(spec):
    """Bad executor settings fail before any work: a missing engine is one line naming its install command."""
    name = _engine(spec)
    if name in EXTRAS:
        module, extra = EXTRAS[name]
        import importlib.util
        if importlib.util.find_spec(module) is None:
            raise SpecError(f"--executor {name} needs {module}: pip install 'nfebench[{extra}]'")
    if name == "pool":
        _check_devices(spec.workers, spec.devices)
