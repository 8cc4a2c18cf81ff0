"""The executor interface (bench/executors.py has the engines and the factory): tasks in, Futures out."""
from __future__ import annotations

import concurrent.futures as cf

from .shard import run_task


class WorkerLost(RuntimeError):
    """The process running a task died before returning (killed, out of memory): the task may be rerun.
    `generation`: the executor generation the task ran in (a pool restarts once per breakage)."""

    def __init__(self, message: str, generation: int = 0):
        super().__init__(message)
        self.generation = generation


class Executor:
    """Runs tasks and returns one Future each. `parallelism`: tasks worth keeping in flight."""
    name = "local"
    parallelism = 1
    generation = 0   # bumped by each restart
    local_workers = False   # its workers use this machine's cores (the driver then keeps to one thread)

    def submit(self, task) -> cf.Future:
        raise NotImplementedError

    def restart(self):
        """Make the executor usable again after a worker was lost."""

    def shutdown(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


class LocalExecutor(Executor):
    """Each task runs in the driver's process when submitted (its Future is done on return)."""

    def submit(self, task) -> cf.Future:
        f: cf.Future = cf.Future()
        try:
            f.set_result(run_task(task))
        except (Exception, SystemExit) as e:   # KeyboardInterrupt stops the driver
            f.set_exception(e)
        return f
