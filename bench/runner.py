"""The grid runner (the driver): plans cells from a RunConfig, runs the missing ones' shards on an executor,
merges each cell's shards and writes the cell as soon as its last shard is in; results.csv once per run.

A cell is split into shards (bench/shard.py); the executor (bench/executors.py) runs them anywhere and returns
their results; the driver alone writes the run directory: each shard's result as it arrives
(RUN/shards/<cell>/, so a rerun resumes at shard granularity), then the cell, atomically, and its shard files
are dropped. traj_rmse's exact reference solutions and DC-Solver's ratios are computed before a cell's
shards are sent: references as tasks on the same executor (cached in RUN/cache), ratios in the driver.
"""
from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

import numpy as np

from models import load_model, model_options
from solvers import SpecError, get_solver
from solvers.plan import BelowMinimumNFE, FixedNFE, PlanError
from .plugins import load_installed_plugins, load_plugin_file

from .calibration import (CALIBRATION_NOISES, CALIBRATION_SEED, CalibrationFile, calibrate, calibration_key,
                          guarded_ratios)
from .cell_data import CellData
from .driver import CellJob, Flight
from .executors import check_executor, make_executor
from .metric_families import CellResult, compute_metrics
from .memory import check_cell_memory
from .preflight import preflight
from .protocol import device_name, fid_dimension_warnings, git_commit, package_versions, protocol_card
from .nfe_changes import reference_moments, save_reference
from .identity import cell_identity, differences, identity_hash
from .shard import DTYPES, ShardTask, class_labels, initial_noise, worker_model
from .sharding import SAVED_SAMPLES, shard_ranges, what_to_keep
from .spec import RunConfig
from .store import RunStore, identity_key


@dataclass
class Cell:
    model: str
    solver: str
    nfe: int
    guidance: float
    seed: int
    n_samples: int
    identity: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def cell_id(self) -> str:
        return identity_hash(self.identity)

    @property
    def key(self):
        return identity_key(self.model, self.solver, self.nfe, self.guidance, self.seed, self.cell_id)

    @property
    def coords(self) -> tuple:
        return (self.model, self.solver, self.nfe, float(self.guidance), self.seed)

    def label(self):
        g = f" g={self.guidance:g}" if self.guidance != 1 else ""
        return f"{self.model} {self.solver} NFE={self.nfe}{g} seed={self.seed}"


def plan(spec: RunConfig, load=None) -> tuple[list[Cell], list[str]]:
    """Validate every spec up front (bad input fails before any work) and list the cells, each with its identity
    (`load(model_spec)` gives the model; default: load_model on the CPU)."""
    load = load or _plan_model
    preflight(spec, load)   # every file and resource the run needs, opened before any work
    check_executor(spec)
    load_installed_plugins()
    for p in spec.plugins:
        try:
            load_plugin_file(p)
        except FileNotFoundError as e:
            raise SpecError(str(e)) from None
    notes: list[str] = []
    models = []
    for m in spec.models:
        model_options(m)
        # an Inception-scored model (hub checkpoints) is compared with a reference it must name
        if set(spec.metrics) & {"fid", "kid"} and not spec.fid_stats and \
                load(m).feature_extractor == "inception-v3-compat" and load(m).fid_reference is None:
            raise SpecError(f"model '{m}' has no FID reference: pass --fid-stats FILE.npz "
                            "(or add reference=<torch-fidelity dataset> to the model spec)")
        models.append(m)
    solvers = [get_solver(s) for s in spec.solvers]
    for m in models:   # memory first: a plan of an absurd budget would itself take the memory
        for g in spec.guidance:
            if g == 1 or not _guidance_skip(load(m)):
                for s in solvers:
                    for n in spec.nfe:
                        check_cell_memory(spec, load(m), s, n, g)   # refused before any work if too big
    plans = {(m, s.spec, n): _try_plan(s, load(m).schedule, n) for m in models for s in solvers for n in spec.nfe}
    for s in solvers:   # a solver none of whose budgets can be planned is bad input, before any work
        errors = [plans[m, s.spec, n] for m in models for n in spec.nfe]
        if all(isinstance(e, PlanError) for e in errors):
            fixed = next((e for e in errors if isinstance(e, FixedNFE)), None)
            if fixed is not None:
                raise SpecError(f"solver '{s.spec}' spends exactly {fixed.nfe} NFE; add {fixed.nfe} to --nfe")
            raise errors[-1]
    cells = []
    for m in models:
        guidance_skip = _guidance_skip(load(m))
        for g in spec.guidance:
            if g != 1 and guidance_skip:
                notes.append(f"{m} {guidance_skip}: guidance {g:g} skipped")
                continue
            for s in solvers:
                for n in spec.nfe:
                    p = plans[m, s.spec, n]
                    if isinstance(p, BelowMinimumNFE):
                        if spec.below_min_nfe == "error":
                            raise p
                        notes.append(f"{s.spec} NFE {n} skipped (min_nfe {p.min_nfe})")
                        continue
                    if isinstance(p, FixedNFE):
                        notes.append(f"{s.spec} NFE {n} skipped (it spends exactly {p.nfe})")
                        continue
                    if isinstance(p, PlanError):
                        raise p
                    for seed in spec.seeds:
                        ident = cell_identity(spec, m, load(m), s, n, g, seed, spec.samples)
                        cells.append(Cell(m, s.spec, n, g, seed, spec.samples, ident))
    return cells, sorted(set(notes))


def _try_plan(solver, schedule, nfe):
    """The solver's Plan for this budget, or the PlanError saying why there is none."""
    try:
        return solver.plan(schedule, nfe)
    except PlanError as e:
        return e


_PLAN_MODELS: dict = {}


def _plan_model(model_spec: str):
    if model_spec not in _PLAN_MODELS:
        _PLAN_MODELS[model_spec] = load_model(model_spec)
    return _PLAN_MODELS[model_spec]


def _guidance_skip(model) -> str:
    """Why guidance != 1 does not apply to a model ('' when it does)."""
    return ("is unconditional" if model.num_classes is None else
            "is a consistency model (one guidance scale)" if not model.guidable else "")


class Runner:
    def __init__(self, spec: RunConfig, out: str | Path, progress=None, log=print, replace: bool = False,
                 executor=None):
        self.spec, self.store, self.log, self.replace = spec, RunStore(out), log, replace
        self.progress = progress
        self.executor = executor   # None: the one the spec asks for, made and shut down by run()
        self._references: set = set()  # models whose FID reference moments this run has saved
        self.dtype = DTYPES[spec.dtype]

    def model(self, spec: str):
        """The model in the network's dtype on the run's device (the workers' own cache, shared in process)."""
        return worker_model(spec, self.spec)

    def run(self) -> dict:
        cells, notes = plan(self.spec, self.model)
        for n in notes:
            self.log(f"note: {n}")
        card = protocol_card(self.spec, self.model)   # run.json's "protocol": what the numbers were measured under
        for w in fid_dimension_warnings(card):
            self.log(f"warning: {w}")
        self.store.ensure()
        self.check_directory(cells)
        meta = self.store.read_meta()
        started = meta.get("started") or _now()
        todo = [c for c in cells if not self.store.has(c.key)]
        done = len(cells) - len(todo)
        # run.json says what produced the cells: a rerun that computes nothing (only redraws the tables)
        # leaves it as the run that did
        record = bool(todo) or not meta
        if record:
            self.store.write_meta(_run_meta(self.spec, started, None, card))
        self.log(f"{len(cells)} cells: {done} already done, {len(todo)} to run -> {self.store.root}")
        failed = []
        bar = self.progress(total=len(todo)) if self.progress else None
        executor = self.executor or (make_executor(self.spec, self.store.root) if todo else None)
        threads = torch.get_num_threads()
        if executor is not None and executor.local_workers:
            # the workers have the cores: the driver's merging and scoring take one thread, never spinning
            # against them (oversubscribed OpenMP threads cost more than they give)
            torch.set_num_threads(1)
        try:
            # a cell held by another process on this directory is left to it and waited for at the end (taken
            # over if that process dies): two processes never compute one cell
            busy = Flight(self, executor, failed, bar).run(todo, wait=False)
            Flight(self, executor, failed, bar).run(busy, wait=True)
        finally:
            torch.set_num_threads(threads)
            if executor is not None and self.executor is None:
                executor.shutdown()
            if bar is not None:
                bar.close()
            self.store.forget_rows()  # reread cells/: another process may have finished some of them
            df = self.store.write_results()   # once per run, and on an interrupt
        if record:
            self.store.write_meta(_run_meta(self.spec, started, _now(), card))
        return {"cells": len(cells), "ran": len(todo) - len(failed), "skipped": done, "failed": failed,
                "results": df}

    def merge(self, job: CellJob) -> CellResult:
        """The cell's row, preview samples and saved features from its shards (in row order)."""
        cell, model = job.cell, job.model
        shards = [job.results[a] for a, _ in job.ranges]
        y = class_labels(model, cell.n_samples)
        samples = None
        if shards[0].samples is not None:
            samples = torch.from_numpy(np.concatenate([r.samples for r in shards]))
            if self.spec.save_samples:
                self.store.write_all_samples(cell.key, samples.numpy(), None if y is None else y.numpy())
        data = CellData.from_shards(model, shards, y, job.plan.grid, cell, self.spec, self.cache_dir, samples)
        wall = sum(r.wall_s for r in shards)
        row = {"model": cell.model, "solver": cell.solver, "nfe": cell.nfe,
               "nfe_used": max(r.nfe_used for r in shards), "guidance": cell.guidance, "seed": cell.seed,
               "n_samples": cell.n_samples, "cell_id": cell.cell_id, "identity": cell.identity, "wall_s": wall,
               "samples_per_s": cell.n_samples / wall if wall > 0 else math.nan, "dtype": self.spec.dtype,
               "model_dtype": self.spec.model_dtype or self.spec.dtype}
        # diverged_frac and the wanted metrics: scored where a one-shard cell ran (the same computation)
        row.update(shards[0].metrics if len(shards) == 1 and shards[0].metrics is not None else self.score(data))
        preview = torch.from_numpy(np.concatenate([r.preview for r in shards if r.preview is not None]))
        return CellResult(row, {"x": preview.clone(), "y": None if y is None else y[:SAVED_SAMPLES]},
                          self.fid_features(data))

    def check_directory(self, cells: list[Cell]):
        """A run directory belongs to one setup: cells already there that this spec would compute differently
        (same coordinates, another identity) or that were made with another protocol (samples, dtype, metrics,
        ...) are refused with one line, or moved aside to RUN/replaced/ with `replace`."""
        planned = {c.coords: c for c in cells}
        protocols = {c.model: c.identity["protocol"] for c in cells}
        run_level = next(iter(protocols.values()), None)
        clash: dict[str, list[str]] = {}
        for key, row in self.store.read_cells_by_key().items():
            ident = row.get("identity")
            if not isinstance(ident, dict) or not row.get("cell_id"):
                clash[key] = ["made by an older nfebench (no cell identity)"]
                continue
            coords = (row["model"], row["solver"], int(row["nfe"]), float(row["guidance"]), int(row["seed"]))
            if coords in planned and planned[coords].cell_id != row["cell_id"]:
                clash[key] = differences(ident, planned[coords].identity)
            elif row["model"] in protocols and ident["protocol"] != protocols[row["model"]]:
                clash[key] = differences(ident["protocol"], protocols[row["model"]])
            elif run_level is not None:
                drop = ("features",)    # another model's extractor is its own business
                a = {k: v for k, v in ident["protocol"].items() if k not in drop}
                b = {k: v for k, v in run_level.items() if k not in drop}
                if a != b:
                    clash[key] = differences(a, b)
        if not clash:
            return
        what = sorted({d for ds in clash.values() for d in ds})
        if not self.replace:
            raise SpecError(f"run directory {self.store.root} holds {len(clash)} cell(s) made with another setup "
                            f"({'; '.join(what[:3])}{'; ...' if len(what) > 3 else ''}); use a new --out, or "
                            f"--replace to move them to {self.store.root / 'replaced'} and compute these")
        dest = self.store.move_aside(list(clash), "replaced")
        self.log(f"moved {len(clash)} cell(s) made with another setup ({'; '.join(what[:3])}) to {dest}")

    def run_cell(self, cell: Cell) -> CellResult:
        """One cell computed here and now (every shard in this process), not written: its CellResult."""
        model = self.model(cell.model)
        solver = get_solver(cell.solver)
        plan_ = solver.plan(model.schedule, cell.nfe)
        job = CellJob(cell, model, plan_, shard_ranges(cell.n_samples, self.spec.batch_size,
                                                        self.spec.shard_samples), None)
        if solver.needs_calibration:
            job.ratios = tuple(self.calibrated_ratios(cell, model, solver, plan_))
        if what_to_keep(self.spec)["reference"]:
            k = min(self.spec.reference_samples or cell.n_samples, cell.n_samples)
            from .reference import reference_solution
            x_T = initial_noise(model, cell.seed, k, self.dtype)
            tag = f"{cell.model}|{cell.seed}|{self.spec.dtype_tag}"
            job.reference = reference_solution(model, x_T, class_labels(model, k), cell.guidance, plan_.grid[-1],
                                               self.spec.reference_rtol, self.cache_dir, tag, self.spec.batch_size)
        c, config = cell, self.spec.to_dict()
        for a, b in job.ranges:
            ref = None if job.reference is None else job.reference[a:b]
            job.results[a] = ShardTask(config, c.model, c.solver, c.nfe, c.guidance, c.seed, c.n_samples, a, b,
                                       c.key, job.ratios, ref).run()
        return self.merge(job)

    @property
    def calibration(self) -> CalibrationFile:
        return CalibrationFile(self.spec.calibration or self.store.root / "calibration.json")

    def calibrated_ratios(self, cell: Cell, model, solver, plan) -> list[float]:
        """A DC solver's ratios for this cell's (model, NFE, guidance): from the calibration file, else searched
        now on the calibration noises and added to it (the search's NFE are recorded there, not in the cell)."""
        searched_as = solver.calibration_spec   # guard=true and ratios=cpr share the search
        if solver.ratios == "cpr":               # predicted from the ratios searched for this model
            from solvers import dc_cpr

            from .calibration import cpr_searched
            return dc_cpr.predict(dc_cpr.fit(cpr_searched(self.spec, cell.model, solver)), plan.steps, cell.guidance)
        key = calibration_key(cell.model, searched_as, cell.nfe, cell.guidance, self.spec.dtype_tag)
        with self.calibration.locked():
            entry = self._calibration_entry(cell, model, solver, plan, searched_as, key)
        return guarded_ratios(entry, solver.guard)

    def _calibration_entry(self, cell, model, solver, plan, searched_as, key) -> dict:
        entry = self.calibration.get(key)
        if entry is None:
            self.log(f"calibrating {searched_as} for {cell.model} NFE={cell.nfe} g={cell.guidance:g} "
                     f"({CALIBRATION_NOISES} noises) -> {self.calibration.path}")
            x_T = initial_noise(model, CALIBRATION_SEED, CALIBRATION_NOISES, self.dtype).to(self.spec.device)
            y = class_labels(model, CALIBRATION_NOISES)
            entry = calibrate(model, solver, plan, x_T, None if y is None else y.to(self.spec.device),
                              cell.guidance, rtol=self.spec.reference_rtol)
            self.calibration.put(key, entry)
        return entry

    def fid_features(self, data):
        """(sample indices, FID features) of the finite samples of a cell (its CellData), for paired FID-change
        intervals; None for models whose features are not kept (InceptionV3) or runs without FID."""
        from .nfe_changes import FEATURE_EXTRACTORS
        model, cell, ok = data.model, data.cell, data.ok
        if "fid" not in self.spec.metrics or ok.sum() < 2 or model.feature_extractor not in FEATURE_EXTRACTORS:
            return None
        feats = data.features()
        if feats is None:
            return None
        if cell.model not in self._references:
            ref = reference_moments(model)
            if ref is None:
                return None
            save_reference(self.store.root, cell.model, *ref)
            self._references.add(cell.model)
        return ok.nonzero().flatten().numpy(), feats

    def score(self, data) -> dict:
        """diverged_frac and the spec's metrics of a cell (its CellData), each through the metric registry
        (bench/metric.py), over the finite samples only: a diverged sample never silently enters an average."""
        return compute_metrics(data, self.spec.metrics)

    @property
    def cache_dir(self) -> Path:
        return self.store.root / "cache"


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_meta(spec: RunConfig, started, finished, card: dict | None = None) -> dict:
    meta = {"spec": spec.to_dict(), "started": started, "finished": finished, "versions": package_versions(),
            "git_commit": git_commit(), "device": device_name(spec.device), "python": sys.version.split()[0],
            "platform": platform.platform(), "command": " ".join(sys.argv)}
    if card is not None:
        meta["protocol"] = card
    return meta
