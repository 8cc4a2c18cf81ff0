"""Shards: a cell's samples in ranges that run anywhere (a pure task in, a partial result out).

A cell of N samples splits into shards [start, stop) whose bounds are multiples of the batch size, so every
sample is computed in the same batch whatever the number of shards, the worker or the executor: sample i of
seed s is the same bits (seed-addressed noise, solvers/noise.py; the same batches, hence the same arithmetic).
A shard streams its batches through the solver and then through one feature pass, and returns only what the
metrics need (`ShardResult`): the finite mask, the samples' FID features (and the classifier's predictions for
cond_acc), each row's squared distance from the exact ODE solution (traj_rmse), the first samples for the
plots, and the samples themselves only when asked (save_samples, or a plugin metric that reads samples). The
driver (bench/runner.py) merges the shards of a cell (bench/cell_data.py) and scores it: memory is flat in the
samples per cell, apart from D feature floats per sample.

A `ReferenceTask` solves the exact ODE for a batch of rows (traj_rmse's reference), also anywhere; the driver
caches it and sends each shard its rows. Tasks carry everything they need (the run's settings as a dict, the
DC ratios already calibrated): workers read the models and write nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from models import load_model
from solvers import Denoiser, get_solver
from solvers.noise import NoiseStream, x_T_rows

from .metrics import finite_mask
from .plugins import load_installed_plugins, load_plugin_file
from .sharding import SAVED_SAMPLES, ShardResult, what_to_keep

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


def initial_noise(model, seed: int, n: int, dtype, start: int = 0) -> torch.Tensor:
    """Paired noise: sample i of seed s is the same x_T for every solver, NFE, sample count and shard
    (seed-addressed blocks, solvers/noise.py), from the prior N(0, sigma_T^2 I); rows start..start+n-1."""
    z = x_T_rows(seed, n, tuple(model.shape), start=start)
    return (z * float(model.schedule.sigma(model.schedule.T))).to(dtype)


def class_labels(model, n: int, start: int = 0):
    """Balanced labels 0, 1, ..., C-1, 0, 1, ... (sample i has label i % C) for conditional models; None otherwise."""
    return None if model.num_classes is None else torch.arange(start, start + n) % model.num_classes


class SolverOutputError(RuntimeError):
    pass


def check_output(out, x_T: torch.Tensor, solver: str):
    """A solver (a plugin's too) returns one sample per x_T row: same shape, dtype and device; else its cell fails
    with a line saying what came back instead of being scored on the wrong samples."""
    want = f"a tensor of shape {tuple(x_T.shape)}, dtype {x_T.dtype}, on {x_T.device}"
    if not isinstance(out, torch.Tensor):
        raise SolverOutputError(f"solver '{solver}' returned {type(out).__name__}; expected {want}")
    if tuple(out.shape) != tuple(x_T.shape) or out.dtype != x_T.dtype or out.device != x_T.device:
        raise SolverOutputError(f"solver '{solver}' returned a tensor of shape {tuple(out.shape)}, dtype {out.dtype}, "
                                f"on {out.device}; expected {want}")


# ---- the worker's side: settings, models and plugins, once per process -------------------------------------

_MODELS: dict = {}
_PLUGINS: set = set()
WORKER_DEVICE: list = []   # set by an executor that pins its workers to devices (bench/executors.py)


def run_config(config: dict):
    from .spec import RunConfig
    known = {f.name for f in fields(RunConfig)}
    spec = RunConfig()
    for k, v in config.items():
        if k in known:
            setattr(spec, k, v)
    if WORKER_DEVICE:
        spec.device = WORKER_DEVICE[0]
    return spec


def worker_model(model_spec: str, spec):
    """The model of a spec on the run's device, in the network's dtype (`model_dtype`, default the state's),
    loaded once per process."""
    dtype = DTYPES[spec.model_dtype or spec.dtype]
    key = (model_spec, str(spec.device), dtype)
    if key not in _MODELS:
        _MODELS[key] = load_model(model_spec, device=spec.device, dtype=dtype)
    return _MODELS[key]


def _load_plugins(spec):
    if not _PLUGINS:
        load_installed_plugins()
        _PLUGINS.add("")
    for p in spec.plugins:
        if p not in _PLUGINS:
            load_plugin_file(p)
            _PLUGINS.add(p)


# ---- tasks ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardTask:
    """Samples [start, stop) of one cell. `reference`: the exact ODE solution of rows start..min(stop, k)-1
    (traj_rmse), `ratios`: a calibrated solver's ratios, both supplied by the driver."""
    config: dict
    model: str
    solver: str
    nfe: int
    guidance: float
    seed: int
    n_samples: int
    start: int
    stop: int
    key: str = ""
    ratios: tuple | None = None
    reference: torch.Tensor | None = field(default=None, repr=False)

    def run(self) -> ShardResult:
        return sample_shard(self)


@dataclass(frozen=True)
class ReferenceTask:
    """The exact ODE solution (dopri5) of rows start..stop-1 of one (model, seed, guidance), ending at t_end."""
    config: dict
    model: str
    seed: int
    guidance: float
    t_end: float
    start: int
    stop: int

    def run(self) -> torch.Tensor:
        from .reference import solve_reference
        spec = run_config(self.config)
        _load_plugins(spec)
        model = worker_model(self.model, spec)
        n = self.stop - self.start
        x_T = initial_noise(model, self.seed, n, DTYPES[spec.dtype], self.start)
        y = class_labels(model, n, self.start)
        return solve_reference(model, x_T, y, self.guidance, self.t_end, spec.reference_rtol)


def run_task(task):
    """What every executor runs: one task (ShardTask or ReferenceTask) -> its result."""
    with torch.no_grad():
        return task.run()


def sample_shard(task: ShardTask) -> ShardResult:
    """Sample rows start..stop-1 of the cell batch by batch, each batch straight into the feature pass."""
    from .cell_data import feature_pass
    spec = run_config(task.config)
    _load_plugins(spec)
    model = worker_model(task.model, spec)
    solver = get_solver(task.solver)
    if task.ratios is not None:
        solver = solver.with_ratios(list(task.ratios))
    plan = solver.plan(model.schedule, task.nfe)
    keep = what_to_keep(spec)
    bs = spec.batch_size if 0 < spec.batch_size < task.n_samples else task.n_samples
    if task.start % bs:
        raise ValueError(f"shard start {task.start} is not a multiple of the batch size {bs}")
    dtype = DTYPES[spec.dtype]
    k = min(spec.reference_samples or task.n_samples, task.n_samples)
    oks, feats, preds, ref_sq, preview, samples = [], [], [], [], [], []
    nfe_used, wall = 0, 0.0
    for i in range(task.start, task.stop, bs):
        n = min(bs, task.stop - i)
        x_T = initial_noise(model, task.seed, n, dtype, i).to(spec.device)
        y = class_labels(model, n, i)
        d = Denoiser(model, y=None if y is None else y.to(spec.device), guidance=task.guidance,
                     budget=None if solver.adaptive else task.nfe)
        t0 = time.perf_counter()
        out = solver.sample(d, x_T, plan, generator=NoiseStream(task.seed, start=i))
        check_output(out, x_T, task.solver)
        out = out.cpu()
        wall += time.perf_counter() - t0
        nfe_used = max(nfe_used, d.nfe)
        ok = finite_mask(out)
        oks.append(ok.numpy())
        if keep["features"]:
            f, p = feature_pass(model, out[ok], spec, predictions=keep["predictions"])
            if f is not None:
                feats.append(f)
            if p is not None:
                preds.append(p)
        if keep["reference"] and i < k:
            rows = min(n, k - i)
            ref = task.reference[i - task.start:i - task.start + rows]
            sq = ((out[:rows].to(torch.float64) - ref.to(torch.float64)) ** 2).reshape(rows, -1).sum(1)
            ref_sq.append(sq.numpy())   # nan for a diverged row: left out when merged
        if i < SAVED_SAMPLES:
            preview.append(out[:SAVED_SAMPLES - i].numpy())
        if keep["samples"]:
            samples.append(out.numpy())
    cat = (lambda parts: np.concatenate(parts) if parts else None)
    result = ShardResult(task.start, task.stop, nfe_used, wall, np.concatenate(oks), cat(feats), cat(preds),
                         cat(ref_sq), cat(preview), cat(samples))
    if task.start == 0 and task.stop == task.n_samples:   # the whole cell: scored here, in parallel
        from .cell_data import CellData
        from .metric_families import compute_metrics
        x = None if result.samples is None else torch.from_numpy(result.samples)
        data = CellData.from_shards(model, [result], class_labels(model, task.n_samples), plan.grid, None, spec,
                                    None, x)
        result.metrics = {k: float(v) for k, v in compute_metrics(data, spec.metrics).items()}
    return result
