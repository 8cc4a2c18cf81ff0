"""One multistep core (docs/architecture.md#multistep): the step loop, one history, and the hooks where the seed
papers change a base.

A multistep base evaluates the network once at the start of the run and then, in each step t_i -> t_{i+1},
    x_{i+1} = update(x_i, history)                      the base's formula (DPM-Solver++, UniPC's predictor, PNDM)
    evaluate at x_{i+1} (unless it is the last step)     the evaluation the next step starts from
    x_{i+1} = correct(x_i, history, that evaluation)     UniPC's corrector; the other bases keep x_{i+1}
and pushes the evaluation to its History (times, lambdas, data or noise predictions). Three hooks, identity in
the base, are where a modifier acts:
    model_time(schedule, x, t, t_next) the time the network sees at the state x reached at t  (time shift)
    adjust_history(hist, i, ctx)      the history before step i                                  (DC-Solver)
    slope(D, p, ctx)                  the slope a first-order step is fed                        (heavy ball)
A modifier is a mixin that overrides one hook and names it in `hook`; a base lists the hooks it offers in
`offers`, and combining a modifier with a base that does not offer its hook fails when the class is defined.
`ctx` is the per-call state of the hooks (the momentum, the ratios), created by `begin`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .exponential import Interval
from .registry import Solver

HOOKS = ("model_time", "adjust_history", "slope")


@dataclass(frozen=True)
class History:
    """Model times, lambdas and predictions (data or noise, as the base keeps them) of the last evaluations,
    oldest first. A time may be per-sample (N,) where a modifier moved it."""
    ts: list
    lams: list
    Ms: list

    def push(self, t, lam, M, keep: int) -> "History":
        return History((self.ts + [t])[-keep:], (self.lams + [lam])[-keep:], (self.Ms + [M])[-keep:])

    def with_newest(self, M) -> "History":
        return History(self.ts, self.lams, self.Ms[:-1] + [M])


class Multistep(Solver):
    """Base of the multistep samplers: owns the loop (`begin`, `step`, `sample`); a base supplies `update`
    (and `correct`), `predicts` and `step_order`."""

    predicts = "x0"           # what the history holds: data ('x0') or noise ('eps') predictions
    offers: tuple = HOOKS     # the hooks a modifier may take on this base
    hook: str | None = None   # set by a modifier mixin: the hook it overrides
    corrects = False          # the base corrects with the evaluation at the new state (UniPC)
    momentum_at_first_order = True   # a slope modifier also acts on first-order steps (see momentum.HeavyBall)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        hooks = [k.hook for k in cls.__mro__ if k.__dict__.get("hook")]
        missing = [h for h in hooks if h not in cls.offers]
        if missing:
            raise TypeError(f"{cls.__name__}: its base offers the hooks {cls.offers}, not {missing}")

    # --- hooks: identity in the base ---
    def model_time(self, schedule, x, t, t_next):
        """The time the network is evaluated at for the state x reached at the grid time t (t_next follows it);
        the base returns t itself."""
        return t

    def adjust_history(self, hist: History, i: int, ctx: dict) -> History:
        return hist

    def slope(self, D, p: int, ctx: dict):
        return D

    @property
    def uses_slope(self) -> bool:
        """Whether a modifier takes the slope hook (the base then assembles its update in slope form)."""
        return type(self).slope is not Multistep.slope

    # --- the base's formulas ---
    def step_order(self, i: int, plan, iv: Interval) -> int:
        raise NotImplementedError

    def update(self, denoiser, iv: Interval, x, hist: History, p: int, ctx: dict, i: int, plan):
        raise NotImplementedError

    def correct(self, iv: Interval, x, hist: History, p: int, M_t):
        raise NotImplementedError

    # --- the loop ---
    def evaluate(self, denoiser, x, t):
        pred = denoiser.predict(x, t)
        return pred.x0 if self.predicts == "x0" else pred.eps

    def begin(self, denoiser, x_T, plan):
        """(x, history, ctx) before step 0: the evaluation at t_0 (1 NFE)."""
        g = plan.on(denoiser.schedule)
        M = self.evaluate(denoiser, x_T, g.times(x_T)[0])
        return x_T, History([g.t[0]], [g.lam[0]], [M]), self.context(plan)

    def context(self, plan) -> dict:
        return {}

    def step(self, denoiser, x, hist: History, plan, i: int, ctx: dict):
        """Step i: from the newest history time (t_i, or the time a modifier gave it) to t_{i+1}. Returns
        (x_{i+1}, the history with the evaluation at x_{i+1} pushed; none after the last step)."""
        sched, g = denoiser.schedule, plan.on(denoiser.schedule)
        # from the grid's table, unless a modifier moved the newest time off the grid
        iv = g.interval(i) if hist.ts[-1] is g.t[i] else Interval(sched, hist.ts[-1], g.t[i + 1])
        p = self.step_order(i, plan, iv)
        x_next = self.update(denoiser, iv, x, hist, p, ctx, i, plan)
        if i == plan.steps - 1:
            return x_next, hist                    # the last step: no evaluation after it
        nominal = g.t[i + 1]
        t = self.model_time(sched, x_next, nominal, g.t[i + 2])
        M_t = self.evaluate(denoiser, x_next, g.times(x)[i + 1] if t is nominal else t)
        if t is not nominal:                       # a modifier moved the time: the step ends there
            iv = Interval(sched, hist.ts[-1], t)
        if self.corrects:
            x_next = self.correct(iv, x, hist, p, M_t)
        return x_next, hist.push(t, iv.lam_t, M_t, self.history_length)

    def sample(self, denoiser, x_T, plan, generator=None):
        x, hist, ctx = self.begin(denoiser, x_T, plan)
        for i in range(plan.steps):
            x, hist = self.step(denoiser, x, self.adjust_history(hist, i, ctx), plan, i, ctx)
        return x


class Modifier:
    """A seed paper's change to a base, through one hook of the multistep core (`hook`)."""

    hook: str | None = None
