"""Time grids t_0 = T > t_1 > ... > t_M: the named discretizations every solver can run on.

Every grid takes the option `shift` (SD3's timestep shift, docs/solvers.md#flow-matching), applied to every
point after the grid is built: on a rectified flow t' = s t / (1 + (s - 1) t), which is the log-SNR translation
lambda' = lambda - log s that it means on any schedule.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .plan import PlanError
from .schedules import F64, NoiseSchedule, as_t


def time_uniform(schedule: NoiseSchedule, steps: int, **_):
    return torch.linspace(schedule.T, schedule.t_min, steps + 1, dtype=F64)


def logSNR(schedule: NoiseSchedule, steps: int, **_):
    """Uniform in lambda (DPM-Solver's recommendation for low-resolution pixel models)."""
    lam = torch.linspace(float(schedule.lambda_(schedule.T)), float(schedule.lambda_(schedule.t_min)),
                         steps + 1, dtype=F64)
    t = schedule.t_of_lambda(lam)
    t[0], t[-1] = schedule.T, schedule.t_min  # exact endpoints despite the round trip
    return t


def time_quadratic(schedule: NoiseSchedule, steps: int, **_):
    t = torch.linspace(schedule.T ** 0.5, schedule.t_min ** 0.5, steps + 1, dtype=F64) ** 2
    t[0], t[-1] = schedule.T, schedule.t_min  # sqrt(t_min)**2 != t_min in floating point
    return t


def karras(schedule: NoiseSchedule, steps: int, rho: float = 7.0, **_):
    """EDM's rho-polynomial grid in sigma~ = sigma/alpha = exp(-lambda) (EDM eq. 5)."""
    s_max = float(torch.exp(-schedule.lambda_(schedule.T)))
    s_min = float(torch.exp(-schedule.lambda_(schedule.t_min)))
    ramp = torch.linspace(0, 1, steps + 1, dtype=F64)
    sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = schedule.t_of_lambda(-torch.log(sig))
    t[0], t[-1] = schedule.T, schedule.t_min
    return t


# diffusers' integer-timestep spacings for discrete models. The grid holds the evaluated training steps
# followed by the data point t = 0, the final jump to x0 that diffusers' schedulers make
# (DDIM set_alpha_to_one, DPM-Solver/UniPC final_sigmas_type="zero").
def _train_steps(schedule, name, steps) -> int:
    if schedule.num_train_steps is None:
        raise PlanError(f"grid '{name}' needs a discrete (training-step) schedule; {schedule.name} is continuous")
    return schedule.num_train_steps


def _steps_to_grid(schedule, name, steps_desc):
    # np.array copies: a reversed numpy view has negative strides, which torch.as_tensor rejects
    steps_desc = np.array(steps_desc, dtype=np.float64)
    if steps_desc.size > 1 and not np.all(np.diff(steps_desc) < 0):
        raise PlanError(f"grid '{name}' with {steps_desc.size} steps repeats a training step "
                         f"(the schedule has {schedule.num_train_steps}); use fewer steps")
    t = schedule.t_of_step(torch.as_tensor(steps_desc))
    return torch.cat([t, torch.zeros(1, dtype=F64)])


def leading(schedule, steps: int, **_):
    """diffusers DDIM/PNDM 'leading': k * (N // M) for k = M-1..0."""
    N = _train_steps(schedule, "leading", steps)
    return _steps_to_grid(schedule, "leading", np.arange(steps - 1, -1, -1) * (N // steps))


def trailing(schedule, steps: int, **_):
    N = _train_steps(schedule, "trailing", steps)
    return _steps_to_grid(schedule, "trailing", np.round(np.arange(N, 0, -N / steps)) - 1)


def linspace(schedule, steps: int, **_):
    """diffusers DPMSolverMultistep/UniPC 'linspace': round(linspace(0, N-1, M+1))[::-1][:-1]."""
    N = _train_steps(schedule, "linspace", steps)
    return _steps_to_grid(schedule, "linspace", np.round(np.linspace(0, N - 1, steps + 1))[::-1][:-1])


# diffusers' flow-matching grids (rectified flow only): FlowMatchEuler/Heun's, DPM-Solver's and UniPC's
# `use_flow_sigmas` grids, in float64, each ending at the data point t = 0. `shift` is applied by make_grid.
def _rectified_flow(schedule, name):
    if schedule.kind != "rf":
        raise PlanError(f"grid '{name}' needs a rectified-flow schedule; {schedule.name} is not one "
                        "(use time_uniform, logSNR, time_quadratic or karras)")


def _data_point():
    return torch.zeros(1, dtype=F64)


def flow_euler(schedule, steps: int, shift: float = 1.0, **_):
    """FlowMatchEulerDiscrete/Heun: linspace(1, s(t_min), N), then shifted (so the last point is shifted twice,
    s^2(t_min), as diffusers' shifted table ends at s(t_min) and set_timesteps shifts again), then 0. Starts at
    pure noise t = 1."""
    _rectified_flow(schedule, "flow_euler")
    end = float(shift_rf(as_t(schedule.t_min), shift))
    return torch.cat([torch.linspace(1.0, end, steps, dtype=F64), _data_point()])


def flow_linspace(schedule, steps: int, **_):
    """DPMSolverMultistep with flow sigmas: time_uniform from T to the data point 0 (N intervals), then shifted."""
    _rectified_flow(schedule, "flow_linspace")
    return torch.linspace(schedule.T, 0.0, steps + 1, dtype=F64)


UNIPC_TOP = 1 - 1e-6   # UniPC moves a first flow sigma within 1e-6 of 1 down by 1e-6 (keeps log alpha finite)


def flow_unipc(schedule, steps: int, shift: float = 1.0, **_):
    """UniPCMultistep with flow sigmas: linspace(1, t_min, N + 1) without its last point, shifted, then 0; the
    first point, 1 after any shift, is 1 - 1e-6 (set here to the point the shift maps there)."""
    _rectified_flow(schedule, "flow_unipc")
    t = torch.cat([torch.linspace(1.0, schedule.t_min, steps + 1, dtype=F64)[:-1], _data_point()])
    t[0] = unshift_rf(as_t(UNIPC_TOP), shift)
    return t


def shift_rf(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift on a rectified flow: s t / (1 + (s - 1) t) (fixes 0 and 1; shifts compose by product)."""
    return shift * t / (1 + (shift - 1) * t)


def unshift_rf(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The inverse map: t / (s - (s - 1) t)."""
    return t / (shift - (shift - 1) * t)


def shift_grid(schedule: NoiseSchedule, t: torch.Tensor, shift: float) -> torch.Tensor:
    """Every point of grid t shifted: lambda -> lambda - log(shift) (closed form on a rectified flow, exact at t = 0
    and 1). Elsewhere the translation must keep the grid at or below the schedule's T."""
    if schedule.kind == "rf":
        return shift_rf(t, shift)
    out = schedule.t_of_lambda(schedule.lambda_(t) - math.log(shift))
    out[t == 0] = 0.0
    if float(out[0]) > schedule.T * (1 + 1e-12):
        raise PlanError(f"grid option shift={shift:g} moves the grid's first time to {float(out[0]):.6g}, past "
                        f"{schedule.name}'s T = {schedule.T:g} (the shift translates log-SNR by -log(shift)); "
                        "use shift <= 1 on this schedule")
    return out


def sigmas_after(schedule: NoiseSchedule, grid) -> list[float]:
    """sigma at the end of each interval of `grid`, in one schedule call (a step onto 0 is the jump to x0, which
    costs 1 NFE whatever the solver: the solvers' `plan_on`)."""
    return schedule.sigma(grid[1:]).tolist()


def ends_at_data(name: str, schedule: NoiseSchedule) -> bool:
    """Whether grid `name` on `schedule` ends at the data point sigma = 0 (diffusers' spacings do), so that its
    last interval is the first-order jump to x0 (1 NFE whatever the solver)."""
    return float(schedule.sigma(make_grid(name, schedule, 1)[-1])) == 0.0


GRIDS = {
    "time_uniform": time_uniform,
    "logSNR": logSNR,
    "time_quadratic": time_quadratic,
    "karras": karras,
    "leading": leading,
    "trailing": trailing,
    "linspace": linspace,
    "flow_euler": flow_euler,
    "flow_linspace": flow_linspace,
    "flow_unipc": flow_unipc,
}


def make_grid(name: str, schedule: NoiseSchedule, steps: int, shift: float = 1.0, **opts) -> torch.Tensor:
    """Grid `name` with `steps` intervals; `shift` != 1 then moves every point (shift_grid)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid '{name}'; accepted: {', '.join(GRIDS)}")
    if steps < 1:
        raise ValueError(f"a grid needs at least 1 step, got {steps}")
    if not shift > 0:
        raise ValueError(f"grid option shift={shift} not accepted: need shift > 0")
    t = GRIDS[name](schedule, steps, shift=shift, **opts)
    if shift == 1.0:
        return t
    t = shift_grid(schedule, t, shift)
    if not bool(torch.all(t[1:] < t[:-1])):   # an extreme shift crowds the points together in float64
        raise PlanError(f"grid '{name}' with shift={shift:g} and {steps} steps has repeated or unordered times; "
                        "use a shift closer to 1 or fewer steps")
    return t
