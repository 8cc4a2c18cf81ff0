"""The solver registry: register_solver(name) decorates a Solver class; get_solver('name:key=val') builds one."""
from __future__ import annotations

import math

import torch

from .grids import GRIDS, make_grid
from .options import Range, SpecError, closest, coerce_options, parse_spec
from .plan import BelowMinimumNFE, Plan, PlanError

_REGISTRY: dict[str, type] = {}
# what a solver declares it is (`family`), for the figures' panels and the report (docs/solvers.md#registry)
FAMILIES = ("exponential integrator", "linear multistep", "singlestep and generic ODE", "stochastic",
            "seed modifier", "consistency", "other")
RHO_RANGE = Range(0, 100, lo_open=True)   # the karras grid's exponent (EDM: 7)
SHIFT_RANGE = Range(0, None, lo_open=True)   # SD3's timestep shift of any grid (1: none)


def register_solver(name: str):
    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            taken = _REGISTRY[name]
            raise SpecError(f"solver '{name}' is already registered (by {taken.__module__}.{taken.__qualname__}); "
                            "register the new solver under a name `nfebench list solvers` does not show")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def get_solver(spec: str) -> "Solver":
    name, raw = parse_spec(spec, "solver")
    if name not in _REGISTRY:
        raise SpecError(f"unknown solver '{name}'; closest registered: {closest(name, _REGISTRY)}"
                        " (see `nfebench list solvers`)")
    return _REGISTRY[name](**raw)


def list_solvers() -> dict[str, str]:
    return {name: cls.summary() for name, cls in sorted(_REGISTRY.items())}


class Solver:
    """Base class (docs/architecture.md#solvers). A solver is stateless between calls to `sample`.

    Declared capabilities, read by the harness (never probed): `nominal_order` (convergence order its paper
    states; the `order` *option* of some solvers is a user choice), `stochastic`, `adaptive` (no budget: NFE is
    what it used), `needs_calibration` (DC-Solver's searched ratios), `consistency_sampler` (meant for consistency
    and trajectory models), `flow_sampler` (meant for rectified-flow models only), `alpha_zero_start` (it can
    step from pure noise, alpha = 0), `history_length` (evaluations it keeps: memory estimates), `family` (one of
    FAMILIES) and, on a seed modifier, `base` (the solver it modifies).
    """

    name = "?"
    nominal_order: float = 1  # the convergence order its paper states
    min_nfe: int = 1
    nfe_per_step: int = 1     # network evaluations per grid interval
    default_grid = "logSNR"   # the discretization its paper used
    stochastic = False
    adaptive = False          # adaptive step size: NFE is what it used, not a budget
    needs_calibration = False  # takes searched parameters (DC-Solver's ratios) the harness computes
    consistency_sampler = False  # meant for consistency/trajectory models (the digits-cd and consistency suites)
    flow_sampler = False      # meant for rectified-flow models only (its plan refuses other schedules)
    alpha_zero_start = False  # can step from alpha = 0 (a rectified flow's t = 1, lambda = -inf; grid flow_euler)
    family = "other"          # one of FAMILIES
    base: str | None = None   # a seed modifier's base solver, by registered name (ddim+ts: 'ddim')
    defaults: dict = {}       # option name -> default value (its type is the option's type)
    choices: dict = {}        # option name -> accepted values
    ranges: dict = {}         # numeric option name -> declared range: (lo, hi) closed, or options.Range
    presence_matters: tuple = ()  # options that change the method when given, even at their default value

    def __init__(self, **options):
        defaults = {"grid": self.default_grid, "rho": 7.0, "shift": 1.0, **self.defaults}
        choices = {"grid": tuple(GRIDS), **self.choices}
        ranges = {"rho": RHO_RANGE, "shift": SHIFT_RANGE, **self.ranges}
        opts = coerce_options(f"solver '{self.name}'", options, defaults, choices, ranges)
        self.given = {k: opts[k] for k in sorted(options)
                      if k in self.presence_matters or opts[k] != defaults[k]}  # canonical: order, defaults
        # every option as resolved (a cell's identity); shift = 1 is no shift, left out so that cells made
        # before the option existed keep their identity
        self.options = {k: v for k, v in sorted(opts.items()) if not (k == "shift" and v == 1.0)}
        for key, value in opts.items():
            setattr(self, key, value)
        self.check()

    def check(self):
        """Validate option combinations (raise SpecError)."""

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @property
    def spec(self) -> str:
        """Canonical spec string of this configured solver: options sorted, those at their default left out
        (`ddim:eta=0` is `ddim`), so one method has one name."""
        if not self.given:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.given.items())

    @property
    def calibration_spec(self) -> str:
        """The spec its calibration is searched and stored under (a solver that needs one)."""
        return self.spec

    @property
    def base_spec(self) -> str | None:
        """A seed modifier's base as a spec, with the options the two share (`ddim+ts` -> 'ddim:grid=leading'):
        the other side of its paired ratio. None for a solver that modifies none."""
        if self.base is None:
            return None
        own = _REGISTRY[self.base]().options
        try:
            return _REGISTRY[self.base](**{k: v for k, v in self.options.items() if k in own and v != own[k]}).spec
        except SpecError:    # a shared option's value the base does not accept: the base at its defaults
            return self.base

    @property
    def history_length(self) -> int:
        """Evaluations the solver keeps at once (at least its nominal order)."""
        return max(1, math.ceil(float(self.nominal_order)))

    # --- the plan: the only map from a budget to a discretization (solvers/plan.py) ---
    def plan(self, schedule, nfe: int) -> Plan:
        """The grid and per-step evaluations that spend at most `nfe` (raises a PlanError it cannot)."""
        self.require_nfe(nfe)
        return self.plan_on(schedule, self.time_grid(schedule, max(1, nfe // self.nfe_per_step)))

    def plan_on(self, schedule, grid: torch.Tensor) -> Plan:
        """The plan on a given grid (e.g. a reference implementation's timesteps), every step at full cost."""
        return Plan(grid, (self.nfe_per_step,) * (len(grid) - 1))

    def require_nfe(self, nfe: int):
        if nfe < self.min_nfe:
            raise BelowMinimumNFE(self.name, nfe, self.min_nfe)

    def time_grid(self, schedule, steps: int) -> torch.Tensor:
        """This solver's grid (`grid=` option, default its paper's) with `steps` intervals."""
        return self.named_grid(self.grid, schedule, steps)

    def named_grid(self, name: str, schedule, steps: int) -> torch.Tensor:
        """Grid `name` with this solver's grid options (rho, shift); a grid starting at alpha = 0 only for a
        solver that can step from there (alpha_zero_start)."""
        grid = make_grid(name, schedule, steps, rho=self.rho, shift=self.shift)
        if not self.alpha_zero_start and float(schedule.alpha(grid[0])) == 0.0:
            raise PlanError(f"solver '{self.spec}' cannot start at t = {float(grid[0]):g}, where alpha = 0 (grid "
                            f"'{name}' starts at pure noise); use grid=flow_linspace or flow_unipc, or a solver "
                            "that steps from there (flow-euler, flow-heun, ddim)")
        return grid

    def sample(self, denoiser, x_T: torch.Tensor, plan: Plan, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def sample_on(self, denoiser, x_T: torch.Tensor, grid, generator=None) -> torch.Tensor:
        """`sample` on a given grid (e.g. a reference implementation's timesteps) with `plan_on`'s full-cost
        steps; a Plan passes through."""
        plan = grid if isinstance(grid, Plan) else self.plan_on(denoiser.schedule, grid)
        return self.sample(denoiser, x_T, plan, generator)

    def __repr__(self):
        return f"<solver {self.spec}>"


def _fmt(v):
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)
