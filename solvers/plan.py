"""The plan of a sampling run: the only map from an NFE budget to a discretization (docs/architecture.md#plan).

`Solver.plan(schedule, nfe)` returns a Plan: the time grid t_0 = T > ... > t_M and the network evaluations each
interval spends. `Solver.sample(denoiser, x_T, plan)` follows it; the Denoiser's budget only asserts it. A budget
the solver cannot spend raises a PlanError subclass whose message is the line the CLI prints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .grid_schedule import GridSchedule
from .options import SpecError


class PlanError(SpecError):
    """No plan for this budget (one line: the problem and what is accepted)."""


class BelowMinimumNFE(PlanError):
    def __init__(self, solver: str, nfe: int, min_nfe: int):
        super().__init__(f"NFE {nfe} is below the minimum for solver '{solver}': {min_nfe}")
        self.min_nfe = min_nfe


class FixedNFE(PlanError):
    """The solver spends exactly `nfe` evaluations (e.g. a consistency index list); other budgets are refused."""

    def __init__(self, solver: str, asked: int, nfe: int):
        super().__init__(f"solver '{solver}' spends exactly {nfe} NFE; asked for NFE {asked}")
        self.nfe = nfe


@dataclass(frozen=True, eq=False)
class Plan:
    """grid: float64 times t_0 > ... > t_M; evals[i]: network evaluations of interval i (t_i -> t_{i+1}), in the
    solver's own accounting (a multistep method's evaluation at t_i belongs to interval i, UniPC's corrector
    evaluation too). adaptive: the solver chooses its steps (dopri5): evals is empty and nfe is None."""

    grid: torch.Tensor
    evals: tuple = ()
    adaptive: bool = False

    def __post_init__(self):
        if not self.adaptive and len(self.evals) != len(self.grid) - 1:
            raise ValueError(f"a plan of {len(self.grid) - 1} steps lists {len(self.evals)} step costs")
        object.__setattr__(self, "_tables", {})

    def on(self, schedule) -> GridSchedule:
        """The schedule at this plan's grid times (alpha, sigma, lambda, the intervals between them), computed
        once per plan and schedule (solvers/grid_schedule.py)."""
        kept = self._tables.get(id(schedule))       # (schedule, table): the reference keeps the id unique
        if kept is None or kept[0] is not schedule:
            kept = self._tables[id(schedule)] = (schedule, GridSchedule(schedule, self.grid))
        return kept[1]

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    @property
    def nfe(self) -> int | None:
        return None if self.adaptive else sum(self.evals)

    def __repr__(self):
        return f"Plan(steps={self.steps}, nfe={self.nfe}, evals={self.evals})"
