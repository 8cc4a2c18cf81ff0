"""The `ray` executor: one Ray task per shard (extra `.[ray]`).

Ray is started here unless it already is: on the cluster at `ray_address`, else a quiet local instance with every
CPU of this machine (no dashboard, workers' output not forwarded). A task asks for one GPU when the run's device
is cuda (it then runs on the GPU Ray gave it), else for `cpus // parallelism` CPUs, and runs that many torch
threads. Ray never retries a task itself: a worker that died (crashed, killed, out of memory, its node lost)
fails the task's Future with `WorkerLost` and the driver decides whether to rerun it. A task's exception
arrives as itself (type and message; the worker's traceback as a note).
"""
from __future__ import annotations

import concurrent.futures as cf
import os

import ray
import ray.exceptions as rex

from .executor_submitit import _Raised, _portable
from .executor_base import Executor, WorkerLost
from .shard import run_task

# a task's worker or its node went away: the task itself may well succeed when rerun
LOST = tuple(getattr(rex, n) for n in (
    "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError", "ObjectLostError",
    "OwnerDiedError", "ObjectFetchTimedOutError", "ReferenceCountingAssertionError", "RaySystemError",
    "ActorDiedError", "ActorUnavailableError") if hasattr(rex, n))


def _run_ray_task(task, threads: int = 0, device: str | None = None):
    """What a Ray task runs: `run_task(task)`, its exception returned as `_Raised` (a sys.exit included, which
    Ray would take for a crashed worker)."""
    import traceback

    import torch

    from . import shard
    if threads:
        torch.set_num_threads(threads)
    if device:
        shard.WORKER_DEVICE[:] = [device]
    try:
        return run_task(task)
    except (Exception, SystemExit) as e:
        return _Raised(_portable(e), traceback.format_exc())


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, spec):
        self.spec = spec
        self._started = False
        if not ray.is_initialized():
            if spec.ray_address:
                ray.init(address=spec.ray_address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            self._started = True
        resources = ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        gpu = str(spec.device).startswith("cuda")
        if gpu:
            self.parallelism = spec.workers or max(1, int(resources.get("GPU", 0)))
            self.threads = max(1, cpus // self.parallelism)
            options = dict(num_gpus=1, num_cpus=1)
        else:
            self.parallelism = spec.workers or cpus
            self.threads = max(1, cpus // self.parallelism)
            options = dict(num_cpus=self.threads)
        self._device = "cuda" if gpu else None   # a task sees only the GPU Ray gave it
        self._remote = ray.remote(_run_ray_task).options(max_retries=0, retry_exceptions=False, **options)
        self._refs: set = set()

    def submit(self, task) -> cf.Future:
        out: cf.Future = cf.Future()
        try:
            ref = self._remote.remote(task, self.threads, self._device)
        except Exception as e:   # the task does not serialise, Ray is gone
            out.set_exception(e)
            return out
        self._refs.add(ref)
        inner = ref.future()

        def relay(f: cf.Future):
            self._refs.discard(ref)
            if out.done():
                return
            try:
                value = f.result()
            except cf.CancelledError as e:
                out.set_exception(e)
                return
            except BaseException as e:
                out.set_exception(_driver_side(e))
                return
            if isinstance(value, _Raised):
                out.set_exception(value.exception("a Ray task"))
            else:
                out.set_result(value)
        inner.add_done_callback(relay)
        return out

    def shutdown(self):
        for ref in list(self._refs):
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        self._refs.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def _driver_side(e: BaseException) -> BaseException:
    """The exception the driver sees for a Ray failure."""
    if isinstance(e, rex.TaskCancelledError):
        return cf.CancelledError(str(e))
    if isinstance(e, LOST):
        return WorkerLost(f"the Ray worker running the task was lost ({type(e).__name__}: {_short(e)})")
    if isinstance(e, rex.RayTaskError):   # raised outside run_task (the task did not deserialise, ...)
        cause = e.cause
        if isinstance(cause, BaseException):
            return cause
        try:
            return e.as_instanceof_cause()
        except Exception:
            return RuntimeError(str(e))
    return e


def _short(e: BaseException, n: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[:n] + " ..."
