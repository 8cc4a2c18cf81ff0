"""nfebench solvers: noise schedules, time grids, the counting Denoiser and the sampler registry.

Pure math on tensors: no I/O, and no imports from `models` or `bench`.
"""
from .denoiser import Denoiser, NFEBudgetExceeded, Prediction
from .grids import GRIDS, make_grid
from .options import SpecError, parse_spec
from .plan import BelowMinimumNFE, FixedNFE, Plan, PlanError
from .registry import Solver, get_solver, list_solvers, register_solver
from .schedules import SCHEDULES, VE, NoiseSchedule, RectifiedFlow, VPCosine, VPDiscrete, VPLinear

# importing the modules registers their solvers
from . import ddim, dpm_solver, dpmpp, edm, ode  # noqa: E402,F401
from . import consistency, dc_solver, momentum, pndm, time_shift, unipc  # noqa: E402,F401
from . import adams, ancestral, deis, restart, sa_solver, sde_multistep  # noqa: E402,F401
from . import flow  # noqa: E402,F401

__all__ = [
    "Denoiser", "NFEBudgetExceeded", "Prediction", "GRIDS", "make_grid", "SpecError", "parse_spec",
    "Solver", "get_solver", "list_solvers", "register_solver", "SCHEDULES", "VE", "NoiseSchedule",
    "VPCosine", "VPDiscrete", "VPLinear", "RectifiedFlow", "Plan", "PlanError", "BelowMinimumNFE", "FixedNFE",
]
