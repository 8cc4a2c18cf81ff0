"""DC-Solver (Zhao et al. 2024): dynamic compensation of UniPC's predictor-corrector misalignment
(docs/solvers.md#dc-solver).

The newest history entry M_0 = x0(x~_{i-1}, t_{i-1}) was evaluated at the uncorrected predictor point. Before
step i (1-based) it is replaced by the Lagrange polynomial in t (not lambda) through the three newest entries,
evaluated at
    t' = t_{i-2} + rho_i (t_{i-1} - t_{i-2})          (rho_i = 1: no change)
The replacement is permanent: the next step's differences use it too. rho_1 = rho_2 = 1 (fewer than three
entries). No extra NFE: compensation combines stored evaluations.

The ratios are learned offline for one (model, NFE, guidance, grid) by `search_ratios` (paper section 3.3,
greedy): at each step, AdamW from rho = 1 on the MSE between the state after the whole step (compensation,
predictor, evaluation, corrector) and the exact ODE solution there, over a few noises; the final value is kept.
The solver itself only applies ratios it is given (`with_ratios`), or a constant `ratio` (the paper's
ablation baseline); the harness runs the search and stores it (`nfebench calibrate`). `guard=true` (not in the
reference) asks the harness to fall back to ratios 1 (the base solver) when the searched ratios did not lower
the final error on the search's own noises; the search is the same one, shared with the unguarded solver.
"""
from __future__ import annotations

import copy

import torch

from .denoiser import bcast
from .options import SpecError
from .dpmpp import DPMpp2M, DPMpp3M
from .multistep import History, Modifier
from .registry import register_solver
from .unipc import UniPC

DC_POINTS = 3   # K + 1 with the reference's dc_order K = 2


def lagrange_weights(taus, t_prime) -> list:
    """Weights of the values at the nodes `taus` in their interpolating polynomial evaluated at t_prime."""
    ws = []
    for a, ta in enumerate(taus):
        w = 1.0
        for b, tb in enumerate(taus):
            if b != a:
                w = w * (t_prime - tb) / (ta - tb)
        ws.append(w)
    return ws


def compensate(hist: History, rho) -> History:
    """The history with its newest x0 replaced by the 3-point Lagrange value at t' (rho: float or 0-d tensor)."""
    taus = [torch.as_tensor(t, dtype=torch.float64) for t in hist.ts[-1:-DC_POINTS - 1:-1]]  # newest first
    t_prime = taus[1] + rho * (taus[0] - taus[1])
    Hs = hist.Ms[-1:-DC_POINTS - 1:-1]
    M_hat = sum(bcast(w, H) * H for w, H in zip(lagrange_weights(taus, t_prime), Hs))
    return hist.with_newest(M_hat)


class DynamicCompensation(Modifier):
    """DC-Solver's modifier: before every step with 3 history entries, compensate the newest (hook
    adjust_history of the multistep core)."""

    hook = "adjust_history"
    ranges = {"ratio": (-10, 10)}   # a constant ratio; calibrated ones fall within -1.4..4.5 on the suites
    ratio_list = None     # one per step, rho_1..rho_M (with_ratios)

    def check(self):
        super().check()
        if self.guard and self.ratio is not None:
            raise SpecError(f"solver '{self.name}': guard= applies to calibrated ratios, not to a constant ratio=")
        if self.ratios == "cpr" and (self.guard or self.ratio is not None):
            raise SpecError(f"solver '{self.name}': ratios=cpr predicts the ratios; it takes neither guard= nor ratio=")

    @property
    def needs_calibration(self) -> bool:
        """The harness searches the ratios (bench/calibration.py) unless a constant `ratio` is given."""
        return self.ratio is None

    @property
    def calibration_spec(self) -> str:
        """The spec its ratios are searched and stored under: `guard` only chooses among them afterwards."""
        kept = {k: v for k, v in self.given.items() if k not in ("guard", "ratios")}
        return type(self)(**kept).spec

    def with_ratios(self, ratios) -> "DynamicCompensation":
        solver = copy.copy(self)
        solver.ratio_list = [float(r) for r in ratios]
        return solver

    @property
    def history_length(self) -> int:
        return max(self.order, DC_POINTS)

    def ratios_for(self, steps: int) -> list[float]:
        if self.ratio is not None:
            return ([1.0, 1.0] + [float(self.ratio)] * steps)[:steps]
        if self.ratio_list is None:
            raise SpecError(f"solver '{self.spec}' needs compensation ratios for its {steps} steps: run it through "
                            f"`nfebench run` or `nfebench calibrate` (which search them), or give a constant one, "
                            f"e.g. {self.name}:ratio=1.1")
        if len(self.ratio_list) != steps:
            raise SpecError(f"solver '{self.spec}' was given {len(self.ratio_list)} compensation ratios for {steps} "
                            "steps")
        if any(r != 1.0 for r in self.ratio_list[:DC_POINTS - 1]):
            raise SpecError(f"solver '{self.spec}': the first {DC_POINTS - 1} compensation ratios must be 1 (fewer "
                            f"than {DC_POINTS} evaluations to interpolate), got {self.ratio_list[:DC_POINTS - 1]}")
        return self.ratio_list

    def context(self, plan) -> dict:
        return {**super().context(plan), "ratios": self.ratios_for(plan.steps)}

    def adjust_history(self, hist, i, ctx):
        rho = ctx["ratios"][i]
        if len(hist.Ms) >= DC_POINTS and rho != 1.0:   # exact test, as the reference
            return compensate(hist, rho)
        return hist


def search_ratios(solver, denoiser, x_T, plan, targets, iters: int = 40, lr: float = 0.1) -> list[float]:
    """Greedy ratio search (docs/solvers.md#dc-solver): targets[i] is the exact ODE solution at grid[i + 1] from x_T.

    Each of the `iters` AdamW iterations at a step costs one evaluation (with its backward pass) through
    `denoiser`, whose count is the search's cost. The trajectory follows the solver's own states."""
    ratios = []
    with torch.no_grad():
        # the search compensates each step's history itself: the context's ratios (all 1) are never applied
        x, hist, ctx = solver.with_ratios([1.0] * plan.steps).begin(denoiser, x_T, plan)
    for i in range(plan.steps):
        rho = 1.0
        if len(hist.Ms) >= DC_POINTS:
            theta = torch.ones((), dtype=torch.float64, requires_grad=True)
            opt = torch.optim.AdamW([theta], lr=lr)   # weight decay 0.01, as the reference
            target = targets[i].to(device=x.device, dtype=x.dtype)
            for _ in range(iters):
                with torch.enable_grad():
                    x_next, _ = solver.step(denoiser, x, compensate(hist, theta), plan, i, ctx)
                    loss = torch.mean((x_next - target) ** 2)
                    (grad,) = torch.autograd.grad(loss, theta, allow_unused=True)
                theta.grad = torch.zeros_like(theta) if grad is None else grad
                opt.step()
            rho = float(theta.detach())
        ratios.append(rho)
        with torch.no_grad():
            x, hist = solver.step(denoiser, x, compensate(hist, rho) if rho != 1.0 else hist, plan, i, ctx)
    return ratios


DC_DEFAULTS = {"ratio": None, "guard": False, "ratios": "searched"}
DC_CHOICES = {"ratios": ("searched", "cpr")}   # cpr: predicted from searched ones (solvers/dc_cpr.py)


@register_solver("unipc+dc")
class UniPCDC(DynamicCompensation, UniPC):
    """UniPC with DC-Solver's dynamic compensation (learned ratios, 1 NFE a step); default UniPC-3 bh1 logSNR.

    Any UniPC option; `ratio=R` uses one constant ratio instead of calibrated ones. The reference's LDM setting
    is UniPC order 3 bh1 (its default here), its Stable Diffusion one order 2 bh2 (3-entry history either way,
    so DC also acts at order 2, as in the reference's diffusers port).
    """
    family, base = "seed modifier", "unipc"

    defaults = {**UniPC.defaults, **DC_DEFAULTS}
    choices = {**UniPC.choices, **DC_CHOICES}


@register_solver("dpmpp-2m+dc")
class DPMpp2MDC(DynamicCompensation, DPMpp2M):
    """DPM-Solver++(2M) with DC-Solver's dynamic compensation (learned ratios, 1 NFE a step); with every ratio 1
    it is dpmpp-2m."""
    family, base = "seed modifier", "dpmpp-2m"

    defaults = {"lower_order_final": True, **DC_DEFAULTS}
    choices = DC_CHOICES
    solver_type = "dpmsolver"


@register_solver("dpmpp-3m+dc")
class DPMpp3MDC(DynamicCompensation, DPMpp3M):
    """DPM-Solver++(3M) with DC-Solver's dynamic compensation (a combination the core makes possible: DC's
    3-entry history is 3M's own); with every ratio 1 it is dpmpp-3m."""
    family, base = "seed modifier", "dpmpp-3m"

    defaults = {"lower_order_final": True, **DC_DEFAULTS}
    choices = DC_CHOICES
    solver_type = "dpmsolver"
