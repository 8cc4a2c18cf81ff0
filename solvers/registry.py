"""The solver registry: register_solver(name) decorates a Solver class; get_solver('name:key=val') builds one."""
from __future__ import annotations

from importlib.metadata import entry_points

import torch

from .grids import GRIDS, make_grid
from .options import Range, SpecError, closest, coerce_options, parse_spec

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


_entry_points_loaded = False


def _ensure_plugins():
    """Import the installed packages' solvers (entry points of group nfebench.solvers), once per process."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in entry_points(group="nfebench.solvers"):
            ep.load()  # importing the module runs its @register_solver decorators


def get_solver(spec: str) -> "Solver":
    _ensure_plugins()
    name, raw = parse_spec(spec, "solver")
    if name not in _REGISTRY:
        raise SpecError(f"unknown solver '{name}'; closest registered: {closest(name, _REGISTRY)}"
                        " (see `nfebench list solvers`)")
    return _REGISTRY[name](**raw)


def list_solvers() -> dict[str, str]:
    _ensure_plugins()
    return {name: cls.summary() for name, cls in sorted(_REGISTRY.items())}


class Solver:
    """Base class. A solver is stateless between calls to `sample`."""

    name = "?"
    order: float = 1          # nominal convergence order
    min_nfe: int = 1
    nfe_per_step: int = 1     # network evaluations per grid interval
    default_grid = "logSNR"   # the discretization its paper used
    stochastic = False
    adaptive = False          # adaptive step size: NFE is what it used, not a budget
    needs_ratios = False      # takes searched ratios (DC-Solver): the harness calibrates it unless `ratio` is given
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

    def steps_for(self, nfe: int) -> int:
        """Number of grid intervals that spends exactly `nfe` evaluations (or as close below as possible)."""
        if nfe < self.min_nfe:
            raise SpecError(f"NFE {nfe} is below the minimum for solver '{self.name}': {self.min_nfe}")
        return max(1, nfe // self.nfe_per_step)

    def grid_for(self, schedule, nfe: int) -> torch.Tensor:
        return make_grid(self.grid, schedule, self.steps_for(nfe), rho=self.rho)

    def sample(self, denoiser, x_T: torch.Tensor, grid: torch.Tensor, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self):
        return f"<solver {self.spec}>"


def _fmt(v):
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)
