"""The driver's loop over cells in flight: their shards and exact references on an executor, each result saved
as it arrives, each cell merged and written when its last shard is in (bench/runner.py's Runner owns the rest).

A window of cells is open at a time (claimed on the run directory, so two processes never compute one cell).
A cell's shards are sent once the exact reference they need (traj_rmse) is at hand: references are tasks on the
same executor, one per batch of rows, shared by every cell of a (model, seed, guidance, end time) and cached
in RUN/cache. A result is handled the moment its task is done (at once for the in-process executor): a shard's
is saved to RUN/shards/ before anything else happens, so a killed run loses at most the shards in flight.
A task whose worker died is sent again (after a pool restart); MAX_ATTEMPTS losses, or any error raised by
the task, fail its cell alone, with one line, and the grid goes on.
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from dataclasses import dataclass, field

import torch

from solvers import get_solver

from .executor_base import WorkerLost
from .nfe_changes import save_cell_features
from .reference import read_cached_reference, reference_batches, reference_cache_path, write_cached_reference
from .shard import ReferenceTask, ShardTask
from .sharding import shard_ranges, what_to_keep

MAX_ATTEMPTS = 3   # a task whose worker dies is rerun; one that loses its worker this often fails its cell


@dataclass
class CellJob:
    """A cell in flight: its plan, its shards' ranges and the results in, its claim on the run directory."""
    cell: object
    model: object
    plan: object
    ranges: list
    claim: object
    results: dict = field(default_factory=dict)   # start -> ShardResult
    ratios: tuple | None = None
    reference: torch.Tensor | None = None
    failed: bool = False

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.ranges)


@dataclass
class RefJob:
    """One exact reference solution (rows 0..k-1 of a (model, seed, guidance, end time)) being solved."""
    path: object
    batches: list = field(default_factory=list)
    parts: dict = field(default_factory=dict)     # start -> tensor
    waiting: list = field(default_factory=list)   # cell jobs
    result: torch.Tensor | None = None
    failed: str = ""   # why it could not be solved (the cells needing it fail with that line)


@dataclass
class _Sent:
    kind: str          # "shard" or "ref"
    owner: object      # its CellJob or RefJob
    task: object
    attempt: int = 0


class Flight:
    """One pass of the driver over a list of cells (Runner.run makes two: cells free, then cells another
    process held)."""

    def __init__(self, runner, executor, failed: list, bar=None):
        self.runner, self.executor, self.failed, self.bar = runner, executor, failed, bar
        self.spec, self.store = runner.spec, runner.store
        self.jobs: dict = {}       # cell key -> CellJob
        self.refs: dict = {}       # cache path -> RefJob
        self.inflight: dict = {}   # Future -> _Sent
        self.resend: list = []     # tasks whose worker died, sent again after the restart
        self.lost = False

    def run(self, cells, wait: bool = False) -> list:
        """Compute these cells; returns those another process holds (only when `wait` is off)."""
        busy, queue = [], deque(cells)
        window = max(2, 2 * self.executor.parallelism) if self.executor is not None else 1
        try:
            while queue or self.inflight or self.resend:
                while queue and len(self.jobs) < window:
                    cell = queue.popleft()
                    if self.open(cell, wait) is None:
                        busy.append(cell)
                if self.resend:
                    if self.lost:   # a dead worker may have broken the pool: make it whole first
                        self.executor.restart()
                        self.lost = False
                    again, self.resend = self.resend, []
                    for sent in again:
                        self.submit(sent)
                if self.inflight:
                    done, _ = cf.wait(list(self.inflight), return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        if fut in self.inflight:
                            self.handle(fut)
        finally:
            for job in list(self.jobs.values()):
                job.claim.__exit__(None, None, None)
        return busy

    # ---- a cell's life: open, references, shards, finish ------------------------------------------------------

    def open(self, cell, wait: bool):
        """Claim a cell and send its missing shards; None when another process holds it."""
        claim = self.store.claim(cell.key, wait=wait)
        if not claim.__enter__():
            claim.__exit__(None, None, None)
            return None
        if self.store.has(cell.key):   # finished meanwhile by another process
            claim.__exit__(None, None, None)
            self._tick()
            return True
        if self.bar is not None:
            self.bar.set_postfix_str(cell.label())
        try:
            model = self.runner.model(cell.model)
            solver = get_solver(cell.solver)
            plan = solver.plan(model.schedule, cell.nfe)
            job = CellJob(cell, model, plan, shard_ranges(cell.n_samples, self.spec.batch_size,
                                                          self.spec.shard_samples), claim)
            job.results = self.store.read_shards(cell.key, job.ranges)
            if solver.needs_calibration and not job.complete:
                job.ratios = tuple(self.runner.calibrated_ratios(cell, model, solver, plan))
        except KeyboardInterrupt:
            claim.__exit__(None, None, None)
            raise
        except (Exception, SystemExit) as e:
            claim.__exit__(None, None, None)
            self._record_failure(cell, f"{type(e).__name__}: {e}")
            return True
        self.jobs[cell.key] = job
        if job.complete:   # every shard was saved by an earlier run
            self.finish(job)
        else:
            self.start(job)
        return job

    def start(self, job: CellJob):
        """Send the cell's missing shards, once the exact reference they need (traj_rmse) is at hand."""
        k = min(self.spec.reference_samples or job.cell.n_samples, job.cell.n_samples)
        if what_to_keep(self.spec)["reference"] and any(a < k for a, _ in job.ranges if a not in job.results):
            cell = job.cell
            t_end = float(job.plan.grid[-1])
            shape = (k, *job.model.shape)
            tag = f"{cell.model}|{cell.seed}|{self.spec.dtype_tag}"
            path = reference_cache_path(self.runner.cache_dir, tag, cell.guidance, t_end, self.spec.reference_rtol,
                                        shape)
            ref = self.refs.get(str(path))
            if ref is None:
                ref = self.refs[str(path)] = RefJob(path, result=read_cached_reference(path, shape))
                if ref.result is None:
                    ref.batches = reference_batches(job.model, k, cell.guidance, self.spec.batch_size)
                    ref.waiting.append(job)
                    for a, b in ref.batches:
                        self.submit(_Sent("ref", ref, ReferenceTask(self.spec.to_dict(), cell.model, cell.seed,
                                                                    cell.guidance, t_end, a, b)))
                    return
            if ref.failed:
                self._fail(_Sent("shard", job, None), ref.failed)
                return
            if ref.result is None:
                ref.waiting.append(job)
                return
            job.reference = ref.result
        self.send_shards(job)

    def send_shards(self, job: CellJob):
        c, config = job.cell, self.spec.to_dict()
        for a, b in job.ranges:
            if job.failed:
                return
            if a in job.results:
                continue
            ref = None if job.reference is None else job.reference[a:b]
            self.submit(_Sent("shard", job, ShardTask(config, c.model, c.solver, c.nfe, c.guidance, c.seed,
                                                      c.n_samples, a, b, c.key, job.ratios, ref)))

    def submit(self, sent: _Sent):
        fut = self.executor.submit(sent.task)
        self.inflight[fut] = sent
        if fut.done():   # the in-process executor: handle (save) it before the next task runs
            self.handle(fut)

    def handle(self, fut):
        sent = self.inflight.pop(fut)
        owner = sent.owner
        try:
            result = fut.result()
        except WorkerLost as e:
            if sent.kind == "shard" and owner.failed:
                return
            if sent.attempt + 1 >= MAX_ATTEMPTS:
                self._fail(sent, f"WorkerLost: {e} ({MAX_ATTEMPTS} times)")
                return
            self.lost = self.lost or e.generation == self.executor.generation   # one restart per breakage
            self.store.log_event(f"worker lost running {_label(sent.task)}; rerun")
            self.resend.append(_Sent(sent.kind, owner, sent.task, sent.attempt + 1))
            return
        except (Exception, SystemExit) as e:   # a failing cell never aborts the grid
            self._fail(sent, f"{type(e).__name__}: {e}")
            return
        if sent.kind == "ref":
            self._reference_part(owner, sent.task, result)
        elif not owner.failed:
            self.store.write_shard(owner.cell.key, result)
            owner.results[result.start] = result
            if owner.complete:
                self.finish(owner)

    def _reference_part(self, ref: RefJob, task, x):
        ref.parts[task.start] = x
        if len(ref.parts) < len(ref.batches):
            return
        ref.result = torch.cat([ref.parts[a] for a, _ in ref.batches])
        write_cached_reference(ref.path, ref.result)
        waiting, ref.waiting = ref.waiting, []
        for job in waiting:
            if not job.failed:
                job.reference = ref.result
                self.send_shards(job)

    def finish(self, job: CellJob):
        """Merge the cell's shards, score it, write it (atomically), drop its shard files, release it. A failing
        merge or metric fails the cell alone; a failing write (a full disk) stops the run, the cell's shards
        kept."""
        self.jobs.pop(job.cell.key, None)
        try:
            try:
                result = self.runner.merge(job)
            except KeyboardInterrupt:
                raise
            except (Exception, SystemExit) as e:
                job.failed = True
                self._record_failure(job.cell, f"{type(e).__name__}: {e}")
                return
            self.store.write_samples(job.cell.key, result.samples)
            if result.features is not None:
                save_cell_features(self.store.root, job.cell.key, *result.features)
            self.store.write_cell(job.cell.key, result.row)
            self.store.log_event(f"computed {job.cell.key}")
            self.store.drop_shards(job.cell.key)
        finally:
            job.claim.__exit__(None, None, None)
        self._tick()

    # ---- failures ---------------------------------------------------------------------------------------------

    def _fail(self, sent: _Sent, why: str):
        """A task failed for good: its cell (or, a reference, every cell waiting for it) fails, with one line."""
        jobs = sent.owner.waiting if sent.kind == "ref" else [sent.owner]
        if sent.kind == "ref":
            sent.owner.waiting, sent.owner.failed = [], why
        for job in jobs:
            if not job.failed:
                job.failed = True
                job.claim.__exit__(None, None, None)
                self.jobs.pop(job.cell.key, None)
                self._record_failure(job.cell, why)

    def _record_failure(self, cell, why: str, tick: bool = True):
        self.failed.append((cell, why))
        self.runner.log(f"cell failed: {cell.label()}: {why}")
        if tick:
            self._tick()

    def _tick(self):
        if self.bar is not None:
            self.bar.update(1)


def _label(task) -> str:
    if isinstance(task, ShardTask):
        return f"shard [{task.start}, {task.stop}) of {task.key}"
    return f"reference rows [{task.start}, {task.stop}) of {task.model} seed {task.seed}"
