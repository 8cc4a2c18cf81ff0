"""Reference solutions: a high-accuracy dopri5 solve from the same x_T, cached per model, seed and end time."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from solvers import Denoiser, get_solver

from .memory import reference_batch
from .runfiles import read_tensor


def reference_solution(model, x_T, y, guidance, t_end, rtol, cache_dir: Path | None, tag: str,
                       batch_size: int = 0) -> torch.Tensor:
    """x at time t_end of the probability-flow ODE from x_T (float64 dopri5, rtol = atol = `rtol`)."""
    path = None
    if cache_dir is not None:
        h = hashlib.sha1(f"{tag}|{guidance:g}|{float(t_end)!r}|{rtol:g}|{tuple(x_T.shape)}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"ref-{h}.pt"
        # loaded weights-only and checked (float64, x_T's shape); a bad file is moved aside and recomputed
        cached = read_tensor(path, tuple(x_T.shape), torch.float64, "cached reference solution")
        if cached is not None:
            return cached
    solver = get_solver(f"ode-dopri5:rtol={rtol},atol={rtol}")
    model = model.ode_model   # a flow map's trajectories are those of the ODE it solves
    sched = model.schedule
    # a grid ending on the data point (sigma = 0) integrates to t_min, then takes the x0 jump there
    ends = [sched.T, float(t_end)] if float(t_end) > 0 else [sched.T, sched.t_min, 0.0]
    grid = torch.tensor(ends, dtype=torch.float64)
    outs = []
    # no batch size: all at once while the solve fits in memory.REFERENCE_BATCH_BYTES, else in batches of that
    bs = batch_size or reference_batch(model, x_T.shape[0], guidance)
    for i in range(0, x_T.shape[0], bs):
        d = Denoiser(model, y=None if y is None else y[i:i + bs], guidance=guidance)
        outs.append(solver.sample(d, x_T[i:i + bs].to(torch.float64), solver.plan_on(sched, grid))
                    .to(torch.float64).cpu())
    x = torch.cat(outs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + path.name + ".tmp")
        torch.save(x, tmp)
        tmp.replace(path)
    return x
