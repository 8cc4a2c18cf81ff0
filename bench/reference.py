"""Reference solutions: a high-accuracy dopri5 solve from the same x_T, cached per model, seed and end time."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from solvers import Denoiser, get_solver

from .memory import reference_batch
from .runfiles import read_tensor


def reference_cache_path(cache_dir, tag: str, guidance: float, t_end, rtol: float, shape) -> Path:
    """Where the reference solution of these rows is cached (keyed by model, seed and dtype in `tag`, guidance,
    end time, tolerance and x_T's shape)."""
    h = hashlib.sha1(f"{tag}|{guidance:g}|{float(t_end)!r}|{rtol:g}|{tuple(shape)}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"ref-{h}.pt"


def read_cached_reference(path: Path, shape) -> torch.Tensor | None:
    """A cached reference solution: loaded weights-only and checked (float64, this shape); a bad file is moved
    aside (None: compute it)."""
    return read_tensor(path, tuple(shape), torch.float64, "cached reference solution")


def write_cached_reference(path: Path, x: torch.Tensor):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    torch.save(x, tmp)
    tmp.replace(path)


def solve_reference(model, x_T, y, guidance, t_end, rtol) -> torch.Tensor:
    """x at time t_end of the probability-flow ODE from x_T, in one batch (float64 dopri5, rtol = atol = `rtol`).
    dopri5 controls one step size for the whole batch: the rows of a batch are solved together, so a reference
    is defined by its batches (`reference_batches`) as well as its rows."""
    solver = get_solver(f"ode-dopri5:rtol={rtol},atol={rtol}")
    model = model.ode_model   # a flow map's trajectories are those of the ODE it solves
    sched = model.schedule
    # a grid ending on the data point (sigma = 0) integrates to t_min, then takes the x0 jump there
    ends = [sched.T, float(t_end)] if float(t_end) > 0 else [sched.T, sched.t_min, 0.0]
    grid = torch.tensor(ends, dtype=torch.float64)
    d = Denoiser(model, y=y, guidance=guidance)
    return solver.sample(d, x_T.to(torch.float64), solver.plan_on(sched, grid)).to(torch.float64).cpu()


def reference_batches(model, k: int, guidance: float, batch_size: int = 0) -> list[tuple[int, int]]:
    """The row ranges the reference of rows 0..k-1 is solved in: batches of the run's batch size, or (none) all
    k at once while the solve fits in memory.REFERENCE_BATCH_BYTES, else batches of that."""
    bs = batch_size or reference_batch(model.ode_model, k, guidance)
    return [(i, min(i + bs, k)) for i in range(0, k, bs)]


def reference_solution(model, x_T, y, guidance, t_end, rtol, cache_dir: Path | None, tag: str,
                       batch_size: int = 0) -> torch.Tensor:
    """x at time t_end of the probability-flow ODE from x_T (float64 dopri5, rtol = atol = `rtol`), solved in
    `reference_batches` and cached under cache_dir."""
    path = None
    if cache_dir is not None:
        path = reference_cache_path(cache_dir, tag, guidance, t_end, rtol, x_T.shape)
        cached = read_cached_reference(path, x_T.shape)
        if cached is not None:
            return cached
    x = torch.cat([solve_reference(model, x_T[a:b], None if y is None else y[a:b], guidance, t_end, rtol)
                   for a, b in reference_batches(model, x_T.shape[0], guidance, batch_size)])
    if path is not None:
        write_cached_reference(path, x)
    return x
