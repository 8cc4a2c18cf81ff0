"""Time grids t_0 = T > t_1 > ... > t_M: the named discretizations every solver can run on."""
from __future__ import annotations

import numpy as np
import torch

from .schedules import F64, NoiseSchedule


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
        raise ValueError(f"grid '{name}' needs a discrete (training-step) schedule; {schedule.name} is continuous")
    return schedule.num_train_steps


def _steps_to_grid(schedule, name, steps_desc):
    # np.array copies: a reversed numpy view has negative strides, which torch.as_tensor rejects
    steps_desc = np.array(steps_desc, dtype=np.float64)
    if steps_desc.size > 1 and not np.all(np.diff(steps_desc) < 0):
        raise ValueError(f"grid '{name}' with {steps_desc.size} steps repeats a training step "
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
}


def make_grid(name: str, schedule: NoiseSchedule, steps: int, **opts) -> torch.Tensor:
    if name not in GRIDS:
        raise ValueError(f"unknown grid '{name}'; accepted: {', '.join(GRIDS)}")
    if steps < 1:
        raise ValueError(f"a grid needs at least 1 step, got {steps}")
    return GRIDS[name](schedule, steps, **opts)
