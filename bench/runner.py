"""The grid runner: plans cells from a RunSpec, runs the missing ones, writes each as soon as it finishes."""
from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from models import load_model, model_options
from solvers import Denoiser, SpecError, get_solver
from solvers.plugins import load_plugin_file

from .calibration import (CALIBRATION_NOISES, CALIBRATION_SEED, CalibrationFile, calibrate, calibration_key,
                          guarded_ratios)
from .metrics import data_space_metrics, finite_mask, traj_rmse
from .nfe_changes import cell_features, reference_moments, save_cell_features, save_reference
from .reference import reference_solution
from .spec import RunSpec
from .store import RunStore, cell_key

SAVED_SAMPLES = 512  # kept per cell for sample plots
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Cell:
    model: str
    solver: str
    nfe: int
    guidance: float
    seed: int
    n_samples: int

    @property
    def key(self):
        return cell_key(self.model, self.solver, self.nfe, self.guidance, self.seed, self.n_samples)

    def label(self):
        g = f" g={self.guidance:g}" if self.guidance != 1 else ""
        return f"{self.model} {self.solver} NFE={self.nfe}{g} seed={self.seed}"


def plan(spec: RunSpec) -> tuple[list[Cell], list[str]]:
    """Validate every spec up front (bad input fails before any work) and list the cells."""
    for p in spec.plugins:
        try:
            load_plugin_file(p)
        except FileNotFoundError as e:
            raise SpecError(str(e)) from None
    notes: list[str] = []
    models = []
    for m in spec.models:
        name, _ = model_options(m)
        if name.startswith("hf:") and set(spec.metrics) & {"fid", "kid"} and not spec.fid_stats:
            if getattr(load_model(m), "fid_reference", None) is None:
                raise SpecError(f"model '{m}' has no FID reference: pass --fid-stats FILE.npz "
                                "(or add reference=<torch-fidelity dataset> to the model spec)")
        models.append(m)
    solvers = [get_solver(s) for s in spec.solvers]
    cells = []
    for s in solvers:
        if all(n < s.min_nfe for n in spec.nfe):
            raise SpecError(f"NFE {max(spec.nfe)} is below the minimum for solver '{s.spec}': {s.min_nfe}")
        fixed = getattr(s, "fixed_nfe", None)
        if fixed is not None and fixed not in spec.nfe:
            raise SpecError(f"solver '{s.spec}' spends exactly {fixed} NFE; add {fixed} to --nfe")
    for m in models:
        guidance_skip = _guidance_skip(m)
        for g in spec.guidance:
            if g != 1 and guidance_skip:
                notes.append(f"{m} {guidance_skip}: guidance {g:g} skipped")
                continue
            for s in solvers:
                for n in spec.nfe:
                    if n < s.min_nfe:
                        if spec.below_min_nfe == "error":
                            raise SpecError(f"NFE {n} is below the minimum for solver '{s.spec}': {s.min_nfe}")
                        notes.append(f"{s.spec} NFE {n} skipped (min_nfe {s.min_nfe})")
                        continue
                    if getattr(s, "fixed_nfe", None) not in (None, n):
                        notes.append(f"{s.spec} NFE {n} skipped (it spends exactly {s.fixed_nfe})")
                        continue
                    for seed in spec.seeds:
                        cells.append(Cell(m, s.spec, n, g, seed, spec.samples))
    return cells, sorted(set(notes))


_GUIDANCE_SKIP: dict[str, str] = {}


def _guidance_skip(model_spec: str) -> str:
    """Why guidance != 1 does not apply to a model ('' when it does)."""
    if model_spec not in _GUIDANCE_SKIP:
        model = load_model(model_spec)
        _GUIDANCE_SKIP[model_spec] = ("is unconditional" if model.num_classes is None else
                                      "is a consistency model (one guidance scale)"
                                      if not getattr(model, "guidable", True) else "")
    return _GUIDANCE_SKIP[model_spec]


NOISE_BLOCK = 1024


def initial_noise(model, seed: int, n: int, dtype) -> torch.Tensor:
    """Paired noise: sample i of seed s is the same x_T for every solver, NFE and sample count (drawn in
    fixed blocks of 1024, each from its own generator), from the prior N(0, sigma_T^2 I)."""
    blocks = []
    for b in range((n + NOISE_BLOCK - 1) // NOISE_BLOCK):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        blocks.append(torch.randn(NOISE_BLOCK, *model.shape, generator=g, dtype=torch.float64))
    z = torch.cat(blocks)[:n]
    return (z * float(model.schedule.sigma(model.schedule.T))).to(dtype)


def class_labels(model, n: int):
    """Balanced labels 0, 1, ..., C-1, 0, 1, ... for conditional models; None otherwise."""
    return None if model.num_classes is None else torch.arange(n) % model.num_classes


class Runner:
    def __init__(self, spec: RunSpec, out: str | Path, progress=None, log=print):
        self.spec, self.store, self.log = spec, RunStore(out), log
        self.progress = progress
        self._models: dict = {}
        self._references: set = set()  # models whose FID reference moments this run has saved
        self.dtype = DTYPES[spec.dtype]

    def model(self, spec: str):
        if spec not in self._models:
            self._models[spec] = load_model(spec, device=self.spec.device, dtype=self.dtype)
        return self._models[spec]

    def run(self) -> dict:
        cells, notes = plan(self.spec)
        for n in notes:
            self.log(f"note: {n}")
        self.store.ensure()
        meta = self.store.read_meta()
        started = meta.get("started") or _now()
        todo = [c for c in cells if not self.store.has(c.key)]
        done = len(cells) - len(todo)
        # run.json says what produced the cells: a rerun that computes nothing (only redraws the tables)
        # leaves it as the run that did
        record = bool(todo) or not meta
        if record:
            self.store.write_meta(_run_meta(self.spec, started, None))
        self.log(f"{len(cells)} cells: {done} already done, {len(todo)} to run -> {self.store.root}")
        failed = []
        bar = self.progress(total=len(todo)) if self.progress else None
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.label())
            if self.store.has(cell.key):  # finished meanwhile by another process on the same run directory
                bar.update(1) if bar is not None else None
                continue
            try:
                row = self.run_cell(cell)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # a failing cell never aborts the grid nor loses finished ones
                failed.append((cell, f"{type(e).__name__}: {e}"))
                self.log(f"cell failed: {cell.label()}: {type(e).__name__}: {e}")
            else:
                self.store.write_samples(cell.key, self._last_samples)
                if self._last_features is not None:
                    save_cell_features(self.store.root, cell.key, *self._last_features)
                self.store.write_cell(cell.key, row)
                self.store.write_results()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if record:
            self.store.write_meta(_run_meta(self.spec, started, _now()))
        self.store.forget_rows()  # reread cells/: another process may have finished some of them
        df = self.store.write_results()
        return {"cells": len(cells), "ran": len(todo) - len(failed), "skipped": done, "failed": failed,
                "results": df}

    def run_cell(self, cell: Cell) -> dict:
        model = self.model(cell.model)
        solver = get_solver(cell.solver)
        grid = solver.grid_for(model.schedule, cell.nfe)
        if getattr(solver, "needs_ratios", False) and getattr(solver, "ratio", None) is None:
            solver = solver.with_ratios(self.calibrated_ratios(cell, model, solver, grid))
        x_T = initial_noise(model, cell.seed, cell.n_samples, self.dtype).to(self.spec.device)
        y = class_labels(model, cell.n_samples)
        gen = torch.Generator().manual_seed(10_007 * cell.seed + 1)  # stochastic solvers' own stream
        bs = self.spec.batch_size or cell.n_samples
        outs, nfe_used = [], 0
        t0 = time.perf_counter()
        for i in range(0, cell.n_samples, bs):
            yb = None if y is None else y[i:i + bs].to(self.spec.device)
            d = Denoiser(model, y=yb, guidance=cell.guidance, budget=None if solver.adaptive else cell.nfe)
            with torch.no_grad():
                outs.append(solver.sample(d, x_T[i:i + bs], grid, generator=gen).cpu())
            nfe_used = max(nfe_used, d.nfe)
        wall = time.perf_counter() - t0
        x = torch.cat(outs)
        self._last_samples = {"x": x[:SAVED_SAMPLES].clone(), "y": None if y is None else y[:SAVED_SAMPLES]}
        ok = finite_mask(x)
        row = {"model": cell.model, "solver": cell.solver, "nfe": cell.nfe, "nfe_used": nfe_used,
               "guidance": cell.guidance, "seed": cell.seed, "n_samples": cell.n_samples,
               "diverged_frac": float(1 - ok.double().mean()), "wall_s": wall,
               "samples_per_s": cell.n_samples / wall if wall > 0 else math.nan}
        row.update(self.score(model, cell, x, ok, x_T, y, grid))
        self._last_features = self.fid_features(model, cell, x, ok)
        return row

    @property
    def calibration(self) -> CalibrationFile:
        return CalibrationFile(self.spec.calibration or self.store.root / "calibration.json")

    def calibrated_ratios(self, cell: Cell, model, solver, grid) -> list[float]:
        """A DC solver's ratios for this cell's (model, NFE, guidance): from the calibration file, else searched
        now on the calibration noises and added to it (the search's NFE are recorded there, not in the cell)."""
        searched_as = getattr(solver, "calibration_spec", solver.spec)   # guard=true shares the search
        key = calibration_key(cell.model, searched_as, cell.nfe, cell.guidance, self.spec.dtype)
        entry = self.calibration.get(key)
        if entry is None:
            self.log(f"calibrating {searched_as} for {cell.model} NFE={cell.nfe} g={cell.guidance:g} "
                     f"({CALIBRATION_NOISES} noises) -> {self.calibration.path}")
            x_T = initial_noise(model, CALIBRATION_SEED, CALIBRATION_NOISES, self.dtype).to(self.spec.device)
            y = class_labels(model, CALIBRATION_NOISES)
            entry = calibrate(model, solver, grid, x_T, None if y is None else y.to(self.spec.device),
                              cell.guidance, rtol=self.spec.reference_rtol)
            self.calibration.put(key, entry)
        return guarded_ratios(entry, getattr(solver, "guard", False))

    def fid_features(self, model, cell, x, ok):
        """(sample indices, FID features) of the finite samples, for paired FID-change intervals; None for
        models whose features are not kept (InceptionV3) or runs without FID."""
        if "fid" not in self.spec.metrics or ok.sum() < 2:
            return None
        feats = cell_features(model, x[ok])
        if feats is None:
            return None
        if cell.model not in self._references:
            ref = reference_moments(model)
            if ref is None:
                return None
            save_reference(self.store.root, cell.model, *ref)
            self._references.add(cell.model)
        return ok.nonzero().flatten().numpy(), feats

    def score(self, model, cell, x, ok, x_T, y, grid) -> dict:
        """Metrics over the finite samples only: a diverged sample never silently enters an average."""
        m = {k: math.nan for k in ("fid", "kid", "traj_rmse", "cond_acc")}
        xs = x[ok]
        if xs.shape[0] < 2:
            return m
        wanted = set(self.spec.metrics)
        if wanted & {"fid", "kid", "cond_acc"}:
            if model.feature_extractor == "data":
                m.update(data_space_metrics(model, xs))
            elif model.feature_extractor == "inception-v3-compat":
                from .inception import inception_metrics
                m.update(inception_metrics(model, xs, inception_weights=self.spec.inception_weights or None,
                                           fid_stats=self.spec.fid_stats or None,
                                           reference=getattr(model, "fid_reference", None),
                                           cache_dir=self.cache_dir, kid_subsets_n=self.spec.kid_subsets))
            else:
                from .fidelity import fidelity_metrics
                m.update(fidelity_metrics(model, xs, None if y is None else y[ok], cache_dir=self.cache_dir,
                                           kid_subsets=self.spec.kid_subsets))
        if "traj_rmse" in wanted:
            # paired noise: the first k samples of every cell share x_T, so one reference serves them all
            k = min(self.spec.reference_samples or x.shape[0], x.shape[0])
            ref = reference_solution(model, x_T[:k], None if y is None else y[:k], cell.guidance, grid[-1],
                                     self.spec.reference_rtol, self.cache_dir,
                                     f"{cell.model}|{cell.seed}|{self.spec.dtype}", self.spec.batch_size)
            okk = ok[:k]
            if okk.sum() >= 1:
                m["traj_rmse"] = traj_rmse(x[:k][okk], ref[okk])
        return {k: v for k, v in m.items() if k in wanted or not math.isnan(v)}

    @property
    def cache_dir(self) -> Path:
        return self.store.root / "cache"


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_meta(spec: RunSpec, started, finished) -> dict:
    return {"spec": spec.to_dict(), "started": started, "finished": finished, "versions": _versions(),
            "git_commit": _git_commit(), "device": _device(spec.device), "python": sys.version.split()[0],
            "platform": platform.platform(), "command": " ".join(sys.argv)}


def _versions():
    out = {}
    for pkg in ("nfebench", "torch", "numpy", "torchdiffeq", "torch-fidelity", "pandas", "diffusers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _git_commit():
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _device(dev):
    if str(dev).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
