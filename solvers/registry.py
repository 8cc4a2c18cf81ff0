"""The solver registry: register_solver(name) decorates a Solver class; get_solver('name:key=val') builds one."""
from __future__ import annotations

import math

import torch

from .grids import GRIDS, make_grid
from .options import Range, SpecError, closest, coerce_options, parse_spec
from .plan import BelowMinimumNFE, Plan

_REGISTRY: dict[str, type] = {}
RHO_RANGE = Range(0, 100, lo_open=True)   # the karras grid's exponent (EDM: 7)


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
    and trajectory models), `history_length` (evaluations it keeps: memory estimates).
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
    defaults: dict = {}       # option name -> default value (its type is the option's type)
    choices: dict = {}        # option name -> accepted values
    ranges: dict = {}         # numeric option name -> declared range: (lo, hi) closed, or options.Range
    presence_matters: tuple = ()  # options that change the method when given, even at their default value

    def __init__(self, **options):
        defaults = {"grid": self.default_grid, "rho": 7.0, **self.defaults}
        choices = {"grid": tuple(GRIDS), **self.choices}
        ranges = {"rho": RHO_RANGE, **self.ranges}
        opts = coerce_options(f"solver '{self.name}'", options, defaults, choices, ranges)
        self.given = {k: opts[k] for k in sorted(options)
                      if k in self.presence_matters or opts[k] != defaults[k]}  # canonical: order, defaults
        self.options = dict(sorted(opts.items()))     # every option as resolved (a cell's identity)
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
        return make_grid(self.grid, schedule, steps, rho=self.rho)

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
