"""Time-Shift sampler (Li et al., ICLR 2024): feed the network, per sample, the time whose noise level matches
the state (docs/solvers.md#time-shift).

After each step the state x reached at the nominal time tau is relabelled with the time s of a window around
tau whose marginal noise variance best matches the state's empirical variance (exposure bias: the sampled
state does not follow the training marginal of tau). s becomes the model input and the source time of the next
step (paper Alg. 3, the spec's canonical rule):
    vhat = unbiased variance of x over all its entries (per sample)
    s = argmin_{k in tau + {-w//2, ..., w//2}} (vhat - sigma_k^2)^2   (first k on a tie; sigma^2 = 1 - abar on VP)
applied while the nominal step index of tau exceeds the cutoff, never before the first model call. No extra NFE.

Units: window and cutoff count training steps. A discrete schedule has its own (t = (n + 1)/N for step n);
a continuous schedule gets N = 1000 virtual steps of T/1000 (t = (n + 1) T/1000, the DPM-Solver convention
that maps DDPM steps to continuous time), so its candidates are tau + j T/1000 and the cutoff is the time
(cutoff + 1) T/1000. On VE the candidate variance is sigma^2 as well (Var(x_t) = Var(x_0) + sigma_t^2).

Deliberate deviations from the official code (TS-DPM / TS-DPM-ADM; docs/solvers.md#time-shift), all three samplers:
* the canonical rule above everywhere: the official PNMSolver integration shifts the *target* time of the
  current transfer only, the DPM-Solver one measures the variance of the last model output (eps, about 1)
  and moves the update's target; we measure the state and relabel it;
* candidates are offsets from the nominal time (so window 0 or a cutoff above T is the base sampler exactly,
  also on grids that are not integer-aligned), kept inside the training range [step 0, step N-1] and strictly
  above the next grid time (a wide window on a fine grid would otherwise make the next step run backwards);
* the candidate variance is sigma^2 on every schedule (the ADM code compares with a flipped abar table).
"""
from __future__ import annotations

import torch

from .dpmpp import DPMppMultistep
from .multistep import Modifier
from .options import Range, SpecError
from .pndm import PseudoLinearMultistep
from .registry import register_solver
from .schedules import F64
from .unipc import UniPC

TS_DEFAULTS = {"window": 30, "cutoff": 300}


def shifted_time(schedule, x, t, floor, window: int, cutoff: float):
    """Per-sample time (N,) in the window around the nominal t whose sigma^2 is closest to Var(x), or t itself
    where the shift does not apply. `floor`: the next grid time, which candidates must stay above."""
    n_steps = schedule.num_train_steps or 1000
    unit = schedule.T / n_steps
    index = float(t) / unit - 1.0                      # nominal (training-)step index of t
    half = window // 2
    if half == 0 or index <= cutoff:
        return t
    j = torch.arange(-half, half + 1, dtype=F64)
    cand = t + j * unit
    ok = (index + j >= -1e-9) & (index + j <= n_steps - 1 + 1e-9) & (cand > floor)
    cand = cand[ok]
    var = x.reshape(x.shape[0], -1).to(F64).var(dim=1).cpu()
    k = torch.argmin((var[:, None] - schedule.sigma(cand)[None, :] ** 2) ** 2, dim=1)
    return cand[k]


class TimeShift(Modifier):
    """The time-shift modifier: the core's model_time hook relabels each state with its shifted time."""

    hook = "model_time"
    ranges = {"window": Range(0, 10_000, note="need window >= 0 (training steps; 0 turns the shift off) and "
                                              "window <= 10000"),
              "cutoff": (0, 10_000)}   # training steps

    def check(self):
        super().check()
        if self.window < 0:
            raise SpecError(f"option window={self.window} for solver '{self.name}' not accepted: need window >= 0 "
                            "(training steps; 0 turns the shift off)")

    def model_time(self, schedule, x, t, t_next):
        return shifted_time(schedule, x, t, t_next, self.window, self.cutoff)


@register_solver("ddim+ts")
class DDIMTimeShift(TimeShift, PseudoLinearMultistep):
    """Time-Shift DDIM (TS paper Alg. 3): DDIM with per-sample shifted model times, 1 NFE a step.

    Defaults window 30, cutoff 300: the TS paper's CIFAR-10 TS-DDIM setting at 20 steps (windows 40/30/8/2 at
    10/20/50/100 steps, cutoff 300). Grid: the uniform DDIM grid ('leading'; time_uniform on continuous
    schedules). Deviations from the official code: see the module docstring.
    """
    family, base = "seed modifier", "ddim"

    order, warmup = 1, "ab"
    defaults = dict(TS_DEFAULTS)


@register_solver("pndm+ts")
class PNDMTimeShift(TimeShift, PseudoLinearMultistep):
    """Time-Shift S-PNDM or F-PNDM (variant=s-pndm|f-pndm): the eps history holds shifted-time outputs.

    The transfer starts from the shifted time s, the warm-up stages run from s to the nominal target (PRK mid
    time (s + t')/2), the AB combination is unchanged. NFE and min_nfe are the variant's (S-PNDM steps + 1,
    min 3; F-PNDM steps + 9, min 13). Defaults: variant s-pndm (it covers the benchmark's low NFE; TS-S-PNDM
    gains most at 5-10 steps in the paper's Table 1), window 30, cutoff 300 (the paper's TS-DDIM setting; the
    per-cell PNDM values are not published). Deviations from the official code: see the module docstring.
    """
    family = "seed modifier"

    defaults = {"variant": "s-pndm", **TS_DEFAULTS}
    choices = {"variant": ("s-pndm", "f-pndm")}

    def check(self):
        super().check()
        self.order, self.warmup = {"s-pndm": (2, "heun"), "f-pndm": (4, "prk")}[self.variant]

    @property
    def base(self):
        return self.variant   # the PNDM variant it shifts


@register_solver("dpm-solver+ts")
class DPMSolverTimeShift(TimeShift, DPMppMultistep):
    """Time-Shift multistep DPM-Solver++ (2M by default, order=3 for 3M), 1 NFE a step.

    The update starts from the shifted time (lambda_s, alpha_s, sigma_s of the shifted s) and the history
    keeps the shifted times, as the spec's canonical TS-DPM-Solver. The base is `dpmpp-2m` / `dpmpp-3m`
    (data prediction; the TS code wraps the DPM-Solver code whose prediction mode its scripts do not show),
    with its logSNR default grid and lower_order_final rule. Defaults window 30, cutoff 300: the TS README's
    DPM-Solver-2M example. Deviations from the official code: see the module docstring.
    """
    family = "seed modifier"

    defaults = {"order": 2, "lower_order_final": True, **TS_DEFAULTS}
    choices = {"order": (2, 3)}
    solver_type = "dpmsolver"

    @property
    def nominal_order(self):
        return 2

    @property
    def base(self):
        return {2: "dpmpp-2m", 3: "dpmpp-3m"}[self.order]


@register_solver("unipc+ts")
class UniPCTimeShift(TimeShift, UniPC):
    """Time-Shift UniPC (a combination the core makes possible): each predicted state is evaluated at its
    shifted time, and the corrector and the next step start from there, 1 NFE a step; window 0 is `unipc`.

    Any UniPC option (default UniPC-3 bh1 logSNR); window 30, cutoff 300 as `dpm-solver+ts`. Not in the TS
    paper, which shifts DDIM, PNDM and DPM-Solver: its measurements here are this project's own.
    """
    family, base = "seed modifier", "unipc"

    defaults = {**UniPC.defaults, **TS_DEFAULTS}
