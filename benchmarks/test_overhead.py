"""Per-step overhead of our solvers against their diffusers counterparts (issue 18), side by side in one run.

    python -m pytest benchmarks/test_overhead.py --benchmark-enable -p no:cacheprovider   # pytest-benchmark
    python benchmarks/test_overhead.py                                                    # the table only
    python benchmarks/test_overhead.py --batches 1 --pairs ddim,unipc --budget 2          # a part of it

Not part of the default test run (pyproject's testpaths is tests/ and addopts has --benchmark-disable).

The network costs nothing: it returns one preallocated zero tensor (an eps-prediction; an x0-prediction for the
consistency pair), and the diffusers loop gets the same tensor as its model output. What is timed is therefore
the samplers' own work per network evaluation:

* ours: `solver.plan(schedule, nfe)`, a counting `Denoiser` (with its budget, as the runner builds it) and
  `solver.sample`, on the float64 DDPM linear schedule (`VPDiscrete()`: 1000 steps, betas 1e-4..0.02) or, for
  `cm-multistep`, a consistency checkpoint's VE schedule (sigma 0.002..80 on its N = 40 Karras index grid);
* theirs: `set_timesteps`, then per timestep `scale_model_input` (Euler, Heun, CM: the schedulers that need it)
  and `step` with the zero model output, on the same betas.

Both run on the same timesteps as far as the methods allow (docs/architecture.md#plan): DDIM and PNDM on the
'leading' spacing, DPM-Solver++, UniPC, Euler and Heun on 'linspace' ending at sigma = 0 (diffusers' Euler and
Heun interpolate their sigmas at fractional timesteps where our 'linspace' grid rounds them), the consistency
pair on the checkpoint's index grid. Budgets: 20 evaluations (20 steps); PLMS 21 (20 steps: diffusers' repeated
first timestep is our pseudo-Heun warm-up); Heun 21 (our plan at NFE 21 is 10 Heun steps and the Euler jump to
sigma = 0, diffusers' 11 steps). The time per evaluation is a run's time divided by its network evaluations (the
same count on both sides). Stochastic samplers draw from a torch.Generator on both sides (the runner's
seed-addressed NoiseStream is the harness's choice of noise, not solver work).

Memory: at batch 1000 a tensor is 12 MB, and glibc's allocator hands freed blocks of that size back to the
system when they gather at the top of its heap (trimming), so that the next step faults their pages in again
(about 1.5 us a 4 KB page here). How often that happens depends on the whole heap's history, both sides' tensors
included, and it swung one side's time by 2x between identical runs. The benchmark therefore turns trimming off
for its process (glibc's mallopt: M_TRIM_THRESHOLD 1 GiB, M_MMAP_THRESHOLD 32 MiB), so that a step costs its
arithmetic and its allocations; `--trim` (script) or OVERHEAD_TRIM=1 (pytest) keeps glibc's defaults. The page
faults per evaluation of each side are recorded too (extra_info, and the script's lines).

Timing: both sides interleaved (alternating which goes first), garbage collection off, one torch thread (the
same for both; `--threads` changes it), after a warm-up run each; per side the minimum over repeats of a whole
run's wall-clock time and, separately, of its CPU time (`time.process_time`: it leaves out the time other
processes held the cores, so it is the steadier figure on a shared machine). The ratio is ours / theirs (<= 1:
ours costs no more). Both batches run at the full (3, 32, 32) image shape.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time
import warnings
from dataclasses import dataclass

import pytest
import torch

try:
    import resource
except ImportError:   # not on Unix
    resource = None

from solvers import VE, Denoiser, VPDiscrete, get_solver
from solvers.denoiser import Network

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install nfebench[test])")
# diffusers' set_timesteps calls np.array on a torch tensor (numpy 2 deprecation): silenced, also inside the timing
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
from diffusers import (CMStochasticIterativeScheduler, DDIMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

SHAPE = (3, 32, 32)
BATCHES = (1, 1000)
THREADS = 1
BUDGET_S = 2.0        # seconds both sides run per (pair, batch), each at least MIN_REPEATS times
MIN_REPEATS = 15
TRIM = os.environ.get("OVERHEAD_TRIM") == "1"   # keep glibc's trimming (see the module docstring)
DDPM = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)


@dataclass(frozen=True)
class Pair:
    """One of our solvers (spec, NFE) and its diffusers counterpart (scheduler, set_timesteps steps)."""
    name: str
    spec: str
    nfe: int
    scheduler: object          # () -> a fresh diffusers scheduler
    steps: int                 # set_timesteps(steps)
    scales_input: bool = False  # the scheduler needs scale_model_input before each step
    consistency: bool = False   # a consistency pair: VE schedule, x0 network, stochastic steps


PAIRS = [
    Pair("ddim", "ddim:grid=leading", 20,
         lambda: DDIMScheduler(**DDPM, set_alpha_to_one=True, clip_sample=False, timestep_spacing="leading"), 20),
    Pair("dpmpp-2m", "dpmpp-2m:grid=linspace", 20,
         lambda: DPMSolverMultistepScheduler(**DDPM, solver_order=2, algorithm_type="dpmsolver++",
                                             final_sigmas_type="zero", timestep_spacing="linspace"), 20),
    Pair("dpmpp-3m", "dpmpp-3m:grid=linspace", 20,
         lambda: DPMSolverMultistepScheduler(**DDPM, solver_order=3, algorithm_type="dpmsolver++",
                                             final_sigmas_type="zero", timestep_spacing="linspace"), 20),
    # our default UniPC-3 bh1 with diffusers set to the same method (its own default is UniPC-2 bh2)
    Pair("unipc", "unipc:grid=linspace", 20,
         lambda: UniPCMultistepScheduler(**DDPM, solver_order=3, solver_type="bh1", final_sigmas_type="zero",
                                         timestep_spacing="linspace"), 20),
    Pair("euler", "euler:grid=linspace", 20,
         lambda: EulerDiscreteScheduler(**DDPM, timestep_spacing="linspace", final_sigmas_type="zero"), 20,
         scales_input=True),
    Pair("heun", "heun:grid=linspace", 21,
         lambda: HeunDiscreteScheduler(**DDPM, timestep_spacing="linspace"), 11, scales_input=True),
    Pair("plms", "plms", 21,
         lambda: PNDMScheduler(**DDPM, skip_prk_steps=True, set_alpha_to_one=True, timestep_spacing="leading"), 20),
    Pair("cm-multistep", "cm-multistep", 20,
         lambda: CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, rho=7.0),
         20, scales_input=True, consistency=True),
]
PAIR_NAMES = [p.name for p in PAIRS]


class ZeroNet(Network):
    """A network that costs nothing: it returns one preallocated zero tensor, whatever it is asked."""

    name = "zero"

    def __init__(self, schedule, prediction: str, out: torch.Tensor):
        self.schedule, self.prediction, self.out = schedule, prediction, out

    def forward(self, x, t, y=None, **kw):
        return self.out


def consistency_schedule() -> VE:
    """A consistency checkpoint's schedule as models/hub.py builds it: VE with its N-point Karras index grid."""
    sched = VE(sigma_min=0.002, sigma_max=80.0)
    sched.consistency_steps, sched.rho = 40, 7.0
    return sched


def keep_freed_memory() -> bool:
    """glibc: keep freed heap memory (no trimming) and serve blocks up to 32 MiB from the heap, for this process
    (glibc cannot go back to its adaptive defaults afterwards). False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(M_MMAP_THRESHOLD, 1 << 25))


def minor_faults() -> int:
    """This process's minor page faults so far (0 where the resource module is missing: not on Unix)."""
    return 0 if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Runs:
    """The two zero-argument runs of one (pair, batch) and the network evaluations each makes."""
    ours: object
    theirs: object
    evals: int


def make_runs(pair: Pair, batch: int, shape=SHAPE) -> Runs:
    x_T = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros_like(x_T)
    sched = consistency_schedule() if pair.consistency else VPDiscrete()
    net = ZeroNet(sched, "x0" if pair.consistency else "eps", zero)
    solver = get_solver(pair.spec)
    gen = torch.Generator()

    def ours():
        plan = solver.plan(sched, pair.nfe)
        return solver.sample(Denoiser(net, budget=pair.nfe), x_T, plan, generator=gen)

    scheduler = pair.scheduler()
    kw = {"generator": gen} if pair.consistency else {}

    def theirs():
        scheduler.set_timesteps(pair.steps)
        x = x_T * scheduler.init_noise_sigma if pair.scales_input else x_T
        for t in scheduler.timesteps:
            if pair.scales_input:
                scheduler.scale_model_input(x, t)   # its result is the network's input: the zero network ignores it
            x = scheduler.step(zero, t, x, **kw).prev_sample
        return x

    evals = solver.plan(sched, pair.nfe).nfe
    scheduler.set_timesteps(pair.steps)
    if len(scheduler.timesteps) != evals:
        raise AssertionError(f"{pair.name}: ours makes {evals} evaluations, diffusers {len(scheduler.timesteps)}")
    return Runs(ours, theirs, evals)


@dataclass
class Result:
    """Microseconds per network evaluation, the minimum over repeats of whole runs: wall-clock time and the
    process's CPU time (with one torch thread both count the same work; CPU time leaves out the time other
    processes held the cores, not their share of the memory bandwidth)."""
    pair: str
    batch: int
    ours_us: float
    theirs_us: float
    ours_cpu_us: float
    theirs_cpu_us: float
    repeats: int
    ours_faults: float = 0.0     # minor page faults per evaluation, the fewest of a run
    theirs_faults: float = 0.0

    @property
    def ratio(self) -> float:
        return self.ours_us / self.theirs_us

    @property
    def cpu_ratio(self) -> float:
        return self.ours_cpu_us / self.theirs_cpu_us


def measure(pair: Pair, batch: int, budget_s: float = BUDGET_S, min_repeats: int = MIN_REPEATS,
            shape=SHAPE) -> Result:
    """Both sides interleaved (alternating which goes first), after one warm-up run each, until each has run
    `min_repeats` times and both together `budget_s` seconds."""
    runs = make_runs(pair, batch, shape)
    fns = {"ours": runs.ours, "theirs": runs.theirs}
    wall = {k: float("inf") for k in fns}
    cpu, faults = dict(wall), dict(wall)
    with torch.no_grad():
        for fn in fns.values():
            fn()
        gc_was = gc.isenabled()
        gc.disable()
        try:
            spent, r = 0.0, 0
            while r < min_repeats or spent < budget_s:
                for side in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
                    f0, w0, c0 = minor_faults(), time.perf_counter(), time.process_time()
                    fns[side]()
                    c1, w1, f1 = time.process_time(), time.perf_counter(), minor_faults()
                    wall[side], cpu[side] = min(wall[side], w1 - w0), min(cpu[side], c1 - c0)
                    faults[side] = min(faults[side], f1 - f0)
                    spent += w1 - w0
                r += 1
        finally:
            if gc_was:
                gc.enable()
    us = 1e6 / runs.evals
    return Result(pair.name, batch, wall["ours"] * us, wall["theirs"] * us, cpu["ours"] * us, cpu["theirs"] * us, r,
                  faults["ours"] / runs.evals, faults["theirs"] / runs.evals)


def table(results) -> str:
    """A markdown table: per pair and batch, microseconds per evaluation on both sides (wall) and the ratios."""
    batches = sorted({r.batch for r in results})
    by = {(r.pair, r.batch): r for r in results}
    head = "| solver / diffusers | " + " | ".join(f"batch {b}: ours us | diffusers us | ratio | CPU ratio"
                                                 for b in batches) + " |"
    lines = [head, "|---|" + "---:|---:|---:|---:|" * len(batches)]
    for name in dict.fromkeys(r.pair for r in results):
        cells = []
        for b in batches:
            r = by.get((name, b))
            cells.append(f"{r.ours_us:.1f} | {r.theirs_us:.1f} | {r.ratio:.2f} | {r.cpu_ratio:.2f}" if r
                         else " | | | ")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- pytest-benchmark ---

_RESULTS: list[Result] = []


@pytest.fixture(scope="module", autouse=True)
def _threads_and_summary(request):
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    if not TRIM:
        keep_freed_memory()
    yield
    torch.set_num_threads(before)
    if _RESULTS:   # printed past pytest's output capture, which holds a fixture's teardown output
        text = (f"\nper-evaluation overhead, ours / diffusers ({THREADS} thread, shape {SHAPE}, glibc trimming "
                f"{'on' if TRIM else 'off'}):\n" + table(_RESULTS))
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            print(text)
        else:
            with capture.global_and_fixture_disabled():
                print(text)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_NAMES)
def test_overhead(benchmark, pair, batch):
    """The interleaved ours-vs-diffusers figures go to extra_info; pytest-benchmark's own statistics time ours."""
    res = measure(pair, batch)
    _RESULTS.append(res)
    benchmark.extra_info.update(ours_us_per_eval=res.ours_us, diffusers_us_per_eval=res.theirs_us,
                                ratio=res.ratio, ours_cpu_us_per_eval=res.ours_cpu_us,
                                diffusers_cpu_us_per_eval=res.theirs_cpu_us, cpu_ratio=res.cpu_ratio,
                                ours_faults_per_eval=res.ours_faults, diffusers_faults_per_eval=res.theirs_faults,
                                repeats=res.repeats, threads=THREADS, glibc_trim=TRIM)
    runs = make_runs(pair, batch)
    with torch.no_grad():
        out = benchmark.pedantic(runs.ours, rounds=res.repeats, warmup_rounds=1)
    assert out is None or torch.isfinite(out).all()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Per-evaluation overhead of our solvers vs diffusers' schedulers.")
    ap.add_argument("--pairs", default=",".join(PAIR_NAMES), help="comma-separated: " + ",".join(PAIR_NAMES))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds both sides run per (pair, batch)")
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS, help="runs of each side at least")
    ap.add_argument("--trim", action="store_true", help="keep glibc's trimming of freed memory (module docstring)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.trim:
        keep_freed_memory()
    wanted = args.pairs.split(",")
    unknown = sorted(set(wanted) - set(PAIR_NAMES))
    if unknown:
        ap.error(f"unknown pairs {unknown}; choose from {PAIR_NAMES}")
    results = []
    for b in (int(v) for v in args.batches.split(",")):
        for pair in (p for p in PAIRS if p.name in wanted):
            results.append(measure(pair, b, budget_s=args.budget, min_repeats=args.repeats))
            r = results[-1]
            print(f"{r.pair:>13} batch {b:>5}: ours {r.ours_us:9.1f} us  diffusers {r.theirs_us:9.1f} us  "
                  f"ratio {r.ratio:5.2f}  CPU ratio {r.cpu_ratio:5.2f}  page faults {r.ours_faults:5.0f} / "
                  f"{r.theirs_faults:5.0f}  ({r.repeats} repeats)", flush=True)
    print(f"\nper-evaluation overhead, ours / diffusers ({args.threads} thread(s), shape {SHAPE}, glibc trimming "
          f"{'on' if args.trim else 'off'}):")
    print(table(results))


if __name__ == "__main__":
    main()
