"""DC-Solver calibration: compensation ratios searched per (model, solver, NFE, guidance, dtype), kept in a JSON file.

Ground truth is the exact ODE solution at the solver's own grid times (float64 dopri5 through every grid point,
as the spec recommends instead of the reference's nearest-DDIM-state lookup), from CALIBRATION_NOISES noises of
a seed no benchmark cell uses, so the ratios are never fitted to the samples they are scored on. Search
settings are the reference LDM port's: 40 AdamW iterations a step, lr 0.1, 10 noises.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torchdiffeq import odeint

from solvers import Denoiser
from solvers.dc_solver import search_ratios
from solvers.options import SpecError
from solvers.ode import pf_ode_rhs

from .store import atomic_write

CALIBRATION_SEED = 2_147_483_647   # not a seed any run uses for its cells (seeds are small integers)
CALIBRATION_NOISES = 10
ITERS, LR = 40, 0.1


def calibration_key(model: str, solver: str, nfe: int, guidance: float, dtype: str) -> str:
    return f"{model}|{solver}|nfe={nfe}|g={guidance:g}|{dtype}"


def guarded_ratios(entry: dict, guard: bool) -> list[float]:
    """The entry's ratios; with `guard`, ratios 1 (the base solver) unless the search lowered the final error
    on its own noises (a DC solver option, not the reference's behaviour)."""
    if guard and not entry["final_mse_calibrated"] < entry["final_mse_ratio_1"]:
        return [1.0] * len(entry["ratios"])
    return entry["ratios"]


def exact_states(model, x_T, y, guidance, grid, rtol: float) -> list[torch.Tensor]:
    """The PF-ODE solution from x_T at grid[1:], float64 dopri5 (rtol = atol); a last point with sigma = 0 is
    the data prediction at t_min of the exact state there (the convention of the solvers' final jump)."""
    sched = model.schedule
    d = Denoiser(model, y=y, guidance=guidance)
    jump = float(sched.sigma(grid[-1])) == 0.0
    ts = grid[:-1] if jump else grid
    if jump and float(ts[-1]) > float(sched.t_min):
        ts = torch.cat([ts, torch.tensor([float(sched.t_min)], dtype=ts.dtype)])
    x = x_T.to(torch.float64)
    lam = sched.lambda_(ts).to(device=x.device, dtype=torch.float64)
    with torch.no_grad():
        states = list(odeint(pf_ode_rhs(d), x, lam, method="dopri5", rtol=rtol, atol=rtol))
        if jump:
            states = states[:len(grid) - 1] + [d.x0(states[-1], ts[-1])]
    return [s.cpu() for s in states[1:len(grid)]]


def calibrate(model, solver, plan, x_T, y, guidance: float, rtol: float = 1e-6, iters: int = ITERS,
              lr: float = LR) -> dict:
    """Search the ratios of a DC solver on its plan from the noises x_T; the entry records its cost and effect."""
    t0 = time.perf_counter()
    targets = exact_states(model, x_T, y, guidance, plan.grid, rtol)
    d = Denoiser(model, y=y, guidance=guidance)
    ratios = search_ratios(solver, d, x_T, plan, targets, iters=iters, lr=lr)
    search_nfe = d.nfe

    def final_mse(rs):
        with torch.no_grad():
            x = solver.with_ratios(rs).sample(Denoiser(model, y=y, guidance=guidance), x_T, plan)
        return float(torch.mean((x.double().cpu() - targets[-1]) ** 2))

    return {"ratios": ratios, "noises": int(x_T.shape[0]), "noise_seed": CALIBRATION_SEED, "iters": iters,
            "lr": lr, "ground_truth": f"dopri5 rtol=atol={rtol:g} at the grid times",
            "search_nfe": search_nfe, "final_mse_ratio_1": final_mse([1.0] * len(ratios)),
            "final_mse_calibrated": final_mse(ratios), "wall_s": round(time.perf_counter() - t0, 3)}


class CalibrationFile:
    """The ratios a run (or `nfebench calibrate`) searched, keyed by calibration_key; rewritten atomically,
    merged with what another process may have added meanwhile."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"calibration file {self.path} is not valid JSON ({e}); move it away to search again") \
                from None

    def get(self, key: str) -> dict | None:
        return self.read().get(key)

    @contextmanager
    def locked(self):
        """Hold the file's lock (an flock on <file>.lock, dropped by the kernel if the holder dies): processes
        sharing it search a missing entry once and never lose each other's entries."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def searched(self, model: str, solver: str, dtype: str) -> list[tuple[int, float, list[float]]]:
        """(steps, guidance, ratios) of every entry searched for (model, solver spec, dtype)."""
        out = []
        for key, entry in sorted(self.read().items()):
            m, spec, nfe, g, dt = key.split("|")
            if (m, spec, dt) == (model, solver, dtype):
                out.append((len(entry["ratios"]), float(g[2:]), entry["ratios"]))
        return out

    def put(self, key: str, entry: dict):
        data = self.read()
        data[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def cpr_searched(spec, model: str, solver) -> list[tuple[int, float, list[float]]]:
    """The searched entries a `ratios=cpr` solver is fitted on: those of its base spec and this model in the
    run's --calibration file (required: the run directory's own file grows while the run searches, and a fit must
    not change under a cell). Raises SpecError when there is no file or too little in it to fit."""
    from solvers import dc_cpr
    if not spec.calibration:
        raise SpecError(f"solver '{solver.spec}' predicts its ratios from searched ones: give --calibration FILE "
                        f"(made by `nfebench calibrate --solvers {solver.calibration_spec} ...`)")
    searched = CalibrationFile(spec.calibration).searched(model, solver.calibration_spec, spec.dtype_tag)
    try:
        dc_cpr.fit(searched)
    except SpecError as e:
        raise SpecError(f"solver '{solver.spec}' on {model} with {spec.calibration}: {e}") from None
    return searched
