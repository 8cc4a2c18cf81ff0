"""The `submitit` executor: one submitit job per task, on SLURM when `srun` is on the PATH, else submitit's local
executor (a subprocess per task on this machine). Extra `.[slurm]`.

- SLURM: `submitit.AutoExecutor(folder=RUN/slurm)`, one task per job, `slurm_gpus_per_task` GPUs per job (1 when
  the run's device is cuda and none is given; the job then runs on the GPU SLURM gave it), `slurm_time_min`,
  `slurm_partition`, `slurm_array_parallelism` (> 0). Tasks submitted together go out as one job array.
- local: `submitit.LocalExecutor(folder=RUN/submitit)`; each job runs with `cpus // parallelism` torch threads and
  sees the driver's GPUs.

Each job runs `bench.shard.run_task` through `_run_job`, which returns a task's exception as a value, so the
driver gets the exception the task raised (its type and message; the worker's traceback as a note). A job that
ends without a result (killed, out of memory, timed out, cancelled: submitit's UncompletedJobError) fails its
Future with `WorkerLost`; the driver reruns it. One background thread submits the queued tasks and polls the jobs;
`shutdown` cancels the jobs still running and stops it.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import shlex
import shutil
import site
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from .executor_base import Executor, WorkerLost
from .shard import run_task

ROOT = Path(__file__).resolve().parents[1]   # the directory holding the `bench` package


class _Raised:
    """What `_run_job` returns for a task that raised: the exception (when it survives pickling) and the
    worker's traceback."""

    def __init__(self, exc: BaseException, trace: str):
        self.exc, self.trace = exc, trace

    def exception(self, where: str) -> BaseException:
        """The task's exception, the worker's traceback added as a note naming where it ran."""
        try:
            self.exc.add_note(f"raised in {where}:\n{self.trace}")
        except Exception:
            pass
        return self.exc


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles and unpickles, else a RuntimeError with its type and message."""
    import pickle
    try:
        import cloudpickle
    except ImportError:   # a Ray worker without submitit's dependencies
        cloudpickle = pickle
    try:
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _run_job(task, threads: int = 0, cuda_visible: str | None = "", device: str | None = None):
    """What a submitit job runs: `run_task(task)`, its exception returned as `_Raised` (not raised: submitit
    would keep only the traceback text). threads: torch threads (0: the CPUs SLURM gave the job);
    cuda_visible: the driver's CUDA_VISIBLE_DEVICES restored before CUDA starts ("": leave as it is, None:
    unset); device: the device the job runs on instead of the run's."""
    import torch

    from . import shard
    if cuda_visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    elif cuda_visible:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible
    if not threads:
        try:
            threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or len(os.sched_getaffinity(0))
        except (ValueError, AttributeError):
            threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))
    if device:
        shard.WORKER_DEVICE[:] = [device]
    try:
        return run_task(task)
    except (Exception, SystemExit) as e:   # as LocalExecutor: a task's sys.exit fails the task, not the worker
        return _Raised(_portable(e), traceback.format_exc())


def _pythonpath() -> str | None:
    """PYTHONPATH for the jobs when `bench` is imported from a checkout (not from site-packages), so a job
    finds it whatever its working directory; None when nothing needs adding."""
    try:
        installed = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    except Exception:
        installed = set()
    if ROOT in installed:
        return None
    old = os.environ.get("PYTHONPATH", "")
    parts = [p for p in old.split(os.pathsep) if p]
    if str(ROOT) in parts:
        return None
    return os.pathsep.join([str(ROOT)] + parts)


class SubmititExecutor(Executor):
    name = "submitit"
    POLL_S = {"local": 0.1, "slurm": 2.0}       # how often running jobs are checked
    GATHER_S = {"local": 0.0, "slurm": 0.5}     # how long tasks are gathered into one submission (a job array)

    def __init__(self, spec, log_dir=None):
        import submitit
        self._submitit = submitit
        self.spec = spec
        self.parallelism = spec.workers or 2
        self._tmp = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nfebench-submitit-")
            log_dir = self._tmp.name
        self.mode = "slurm" if shutil.which("srun") else "local"
        path = _pythonpath()
        cuda = str(spec.device).startswith("cuda")
        if self.mode == "slurm":
            self.folder = Path(log_dir) / "slurm"
            gpus = spec.slurm_gpus_per_task or (1 if cuda else 0)
            ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
            params = dict(name="nfebench", timeout_min=int(spec.slurm_time_min), nodes=1, tasks_per_node=1,
                          cpus_per_task=4 * max(1, gpus), gpus_per_node=gpus)
            if path:
                params["slurm_setup"] = [f"export PYTHONPATH={shlex.quote(path)}"]
            if spec.slurm_partition:
                params["slurm_partition"] = spec.slurm_partition
            if spec.slurm_array_parallelism > 0:
                params["slurm_array_parallelism"] = int(spec.slurm_array_parallelism)
            ex.update_parameters(**params)
            # a job sees only its own GPUs: it runs on the first of them whatever cuda:N the run names
            self._job_args = (0, "", "cuda" if cuda and gpus else None)
        else:
            self.folder = Path(log_dir) / "submitit"
            python = shlex.quote(sys.executable)
            if path:   # `env` execs python: the job's pid stays the one submitit signals
                python = f"env PYTHONPATH={shlex.quote(path)} {python}"
            ex = submitit.LocalExecutor(folder=self.folder, python=python)
            ex.update_parameters(timeout_min=int(spec.slurm_time_min))
            threads = max(1, (os.cpu_count() or 1) // self.parallelism)
            # submitit hides the GPUs of a local job that asks for none: give it the driver's view back
            self._job_args = (threads, os.environ.get("CUDA_VISIBLE_DEVICES"), None)
        self._ex = ex
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()   # (task, future) not yet submitted
        self._jobs: dict = {}                                    # job -> future
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="nfebench-submitit", daemon=True)
        self._thread.start()

    # ---- the driver's side -----------------------------------------------------------------------------------

    def submit(self, task) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._stop:
                raise RuntimeError("submit on a shut-down submitit executor")
            self._queue.append((task, fut))
        self._wake.set()
        return fut

    def shutdown(self):
        with self._lock:
            if self._stop:
                return
            self._stop = True
        self._wake.set()
        self._thread.join()
        with self._lock:
            queued, self._queue = list(self._queue), collections.deque()
            jobs, self._jobs = dict(self._jobs), {}
        for job, fut in jobs.items():
            try:
                job.cancel(check=False)
            except Exception:
                pass
            _settle(fut, exc=cf.CancelledError(f"submitit job {job.job_id} cancelled: the executor shut down"))
        for _, fut in queued:
            fut.cancel()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- the background thread -------------------------------------------------------------------------------

    def _loop(self):
        while True:
            self._wake.wait(self.POLL_S[self.mode])
            if self._stop:
                return
            if self._wake.is_set() and self.GATHER_S[self.mode]:
                self._wake.clear()
                self._wake.wait(self.GATHER_S[self.mode])   # let a burst of submissions gather
                if self._stop:
                    return
            self._wake.clear()
            try:
                self._submit_queued()
                self._check_jobs()
            except Exception as e:   # never let the thread die silently: fail what it holds instead
                with self._lock:
                    jobs, self._jobs = dict(self._jobs), {}
                for fut in jobs.values():
                    _settle(fut, exc=WorkerLost(f"the submitit executor's poller failed: {type(e).__name__}: {e}"))

    def _submit_queued(self):
        with self._lock:
            batch, self._queue = list(self._queue), collections.deque()
        batch = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            if len(batch) == 1:
                jobs = [self._ex.submit(_run_job, batch[0][0], *self._job_args)]
            else:
                with self._ex.batch():   # a SLURM job array; separate processes locally
                    jobs = [self._ex.submit(_run_job, t, *self._job_args) for t, _ in batch]
        except Exception as e:   # a task that does not pickle, sbatch refusing: the tasks fail with it
            for _, fut in batch:
                _settle(fut, exc=e)
            return
        with self._lock:
            for job, (_, fut) in zip(jobs, batch):
                if self.mode == "local":
                    job._results_timeout_s = 0   # a local job is done when its process is: no file to wait for
                self._jobs[job] = fut

    def _check_jobs(self):
        with self._lock:
            jobs = list(self._jobs.items())
        for job, fut in jobs:
            if self._stop:
                return
            try:
                done = job.done()
            except Exception:
                continue   # a transient sacct/squeue failure: asked again next time
            if not done:
                continue
            with self._lock:
                self._jobs.pop(job, None)
            _settle(fut, *self._outcome(job))

    def _outcome(self, job):
        """(result, exception) of a finished job."""
        from submitit.core import utils
        try:
            value = job.result()
        except utils.FailedJobError as e:   # failed outside the task (the job could not unpickle it, ...)
            return None, RuntimeError(f"submitit job {job.job_id} failed: {e}")
        except utils.UncompletedJobError as e:
            return None, WorkerLost(f"submitit job {job.job_id} ended without a result "
                                    f"(state {job.state}): {_first_lines(str(e))}")
        except Exception as e:   # its result file does not unpickle
            return None, RuntimeError(f"submitit job {job.job_id}: its result cannot be read: "
                                      f"{type(e).__name__}: {e}")
        if isinstance(value, _Raised):
            return None, value.exception(f"submitit job {job.job_id}")
        return value, None


def _settle(fut: cf.Future, value=None, exc: BaseException | None = None):
    if fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except cf.InvalidStateError:
        pass


def _first_lines(text: str, n: int = 4) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[:n]) + (" | ..." if len(lines) > n else "")
