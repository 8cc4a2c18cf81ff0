"""Record the sha256 of every registered solver's samples, the 'no number changes' guard of the refactor (issue 17).

    python tests/data/make_sample_hashes.py            # writes tests/data/sample_hashes.json
    python tests/data/make_sample_hashes.py --add      # appends the cases of specs added to SPECS since

For every spec in SPECS (each built-in solver with default options, plus the options that select another code
path), on `gmm2d` and `digits` (consistency samplers: `gmm2d-flow` and `digits-cd`; flow samplers: the exact flow
models `gmm2d:schedule=rectified-flow,prediction=flow` and `digits-oracle:schedule=rectified-flow`), at three NFE (the three
smallest of NFE_LADDER at or above the solver's min_nfe; a solver with a fixed NFE at that one only, an
adaptive one (no budget: its samples do not depend on the NFE asked for) at the smallest only), guidance 1
and 4 (unconditional and consistency models: 1 only), float32 and, on the 2-D models, float64 too: the sha256 of
the samples' bytes and the NFE spent. Samples are drawn as the harness draws them (bench/runner.py run_cell):
paired initial noise, balanced labels, a budgeted Denoiser (no budget for adaptive solvers), the solver's own
grid and the seed-addressed solver noise, 64 samples of seed 0, one thread.

DC solvers (`needs_calibration`) are run with a constant ratio (`ratio=`) and, as the `@ratios` form of a spec, with
a fixed explicit list (FIXED_RATIOS, cut to the grid's steps) through `with_ratios`: no calibration search.

tests/test_bit_identical.py recomputes the entries with `compute` below and asserts they are unchanged. Bit
identity holds for one platform and torch build: the recorded `meta` says which.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import models
import solvers
from bench.shard import check_output, class_labels, initial_noise
from solvers.noise import NoiseStream
from solvers.plan import BelowMinimumNFE, FixedNFE

OUT = Path(__file__).with_name("sample_hashes.json")
SEED = 0
N_SAMPLES = 64
NFE_LADDER = (3, 4, 5, 6, 8, 10, 12, 16, 20, 24)
GUIDANCES = (1.0, 4.0)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODELS = ("gmm2d", "digits")
CONSISTENCY_MODELS = ("gmm2d-flow", "digits-cd")      # for cm-multistep and ctm-gamma
FLOW_MODELS = ("gmm2d:schedule=rectified-flow,prediction=flow", "digits-oracle:schedule=rectified-flow")  # flow-*
FLOAT64_MODELS = ("gmm2d", "gmm2d-flow", FLOW_MODELS[0])   # the 2-D models are also hashed in float64
RATIOS_SUFFIX = "@ratios"                             # spec form: DC solver with FIXED_RATIOS (no search)
FIXED_RATIOS = (1.0, 1.0, 1.15, 0.9, 1.3, 0.85, 1.1, 0.95, 1.2, 1.05, 0.8, 1.25,
                1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.85, 1.15, 1.0, 0.9, 1.1, 1.05)

SPECS = [
    # DDIM: deterministic, stochastic (eta), the stochastic step onto sigma = 0, every named grid, karras rho
    "ddim", "ddim:eta=0.5", "ddim:eta=1.0", "ddim:eta=1.0,grid=trailing",
    "ddim:grid=logSNR", "ddim:grid=time_quadratic", "ddim:grid=karras", "ddim:grid=karras,rho=3.0",
    "ddim:grid=leading", "ddim:grid=trailing", "ddim:grid=linspace",
    # singlestep DPM-Solver / DPM-Solver++(2S): order plans, grids ending at sigma = 0, non-logSNR grids
    "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s",
    "dpm-solver-2:grid=leading", "dpm-solver-3:grid=trailing", "dpm-solver-3:grid=time_uniform",
    "dpmpp-2s:grid=linspace",
    # multistep DPM-Solver++
    "dpmpp-2m", "dpmpp-2m:lower_order_final=false", "dpmpp-2m:solver_type=taylor", "dpmpp-2m:grid=karras",
    "dpmpp-2m:grid=trailing",
    "dpmpp-3m", "dpmpp-3m:d2_weight=exact,solver_type=taylor", "dpmpp-3m:lower_order_final=false",
    "dpmpp-3m:grid=leading",
    # EDM
    "euler", "euler:grid=logSNR", "euler:grid=trailing", "euler:rho=5.0",
    "heun", "heun:grid=leading", "heun:grid=time_uniform",
    # torchdiffeq on the PF-ODE (fixed step; adaptive dopri5 with no budget)
    "ode-euler", "ode-euler:grid=leading", "ode-midpoint", "ode-midpoint:grid=trailing",
    "ode-rk4", "ode-rk4:grid=linspace",
    "ode-dopri5", "ode-dopri5:atol=0.0001,rtol=0.0001", "ode-dopri5:grid=leading",
    # PNDM family: warm-ups (heun, prk, ab), AB orders, given grids
    "plms", "plms:order=1", "plms:order=2", "plms:order=3", "plms:warmup=ab", "plms:order=3,warmup=ab",
    "plms:warmup=prk", "plms:order=2,warmup=prk", "plms:grid=time_uniform", "plms:grid=trailing",
    "s-pndm", "s-pndm:grid=logSNR", "f-pndm",
    # momentum: heavy ball on PLMS, GHVB (fractional / integer momentum numbers, explicit beta), HB on 2M
    "plms+hb", "plms+hb:order=2", "plms+hb:beta=0.5,order=3", "plms+hb:beta=1.0",
    "ghvb", "ghvb:order=1.0", "ghvb:order=1.5", "ghvb:order=2.0", "ghvb:beta=0.8,order=4.0", "ghvb:order=4.5",
    "dpmpp-2m+hb", "dpmpp-2m+hb:beta=0.5", "dpmpp-2m+hb:lower_order_final=false", "dpmpp-2m+hb:beta=1.0",
    # time shift: window / cutoff (window 0: off; cutoff 0: from the first step), variants, orders
    "ddim+ts", "ddim+ts:window=0", "ddim+ts:window=8", "ddim+ts:cutoff=0", "ddim+ts:grid=time_uniform",
    "pndm+ts", "pndm+ts:variant=f-pndm", "pndm+ts:cutoff=100,window=40",
    "dpm-solver+ts", "dpm-solver+ts:order=3", "dpm-solver+ts:lower_order_final=false", "dpm-solver+ts:window=0",
    # UniPC: orders, B(h) variants, corrector off, lower_order_final off, a grid ending at sigma = 0
    "unipc", "unipc:variant=bh2", "unipc:order=2,variant=bh2", "unipc:order=2", "unipc:order=1",
    "unipc:corrector=false", "unipc:lower_order_final=false", "unipc:grid=linspace",
    # DC-Solver: constant ratio and a fixed explicit ratio list (no calibration search)
    "unipc+dc:ratio=1.05", "unipc+dc" + RATIOS_SUFFIX, "unipc+dc:order=2,ratio=1.05,variant=bh2",
    "unipc+dc:order=2,variant=bh2" + RATIOS_SUFFIX, "unipc+dc:ratio=1.0",
    "dpmpp-2m+dc:ratio=1.05", "dpmpp-2m+dc" + RATIOS_SUFFIX, "dpmpp-2m+dc:lower_order_final=false,ratio=1.05",
    # consistency samplers (on gmm2d-flow and digits-cd): the checkpoint's grid, index lists, given grids, gamma
    "cm-multistep", "cm-multistep:N=40,ts=0/22/39", "cm-multistep:N=18,ts=0/9/17", "cm-multistep:ts=0/5/11/17",
    "cm-multistep:grid=karras", "cm-multistep:grid=logSNR",
    "ctm-gamma", "ctm-gamma:gamma=0.5", "ctm-gamma:gamma=1.0", "ctm-gamma:gamma=0.5,grid=logSNR",
    # added with the multistep core (issue 17): the two new modifier combinations, 3M's official solver_type
    "unipc+ts", "unipc+ts:window=0", "unipc+ts:order=2,variant=bh2", "dpmpp-3m+dc:ratio=1.05",
    "dpmpp-3m+dc" + RATIOS_SUFFIX, "dpmpp-3m:solver_type=taylor",
    # added with the stochastic and anchor samplers (issue 19): eta, the two-stage plans, solver types, churn
    "euler-ancestral", "euler-ancestral:eta=0.5", "dpmpp-2s-ancestral", "dpmpp-2s-ancestral:eta=0.0",
    "dpmpp-sde", "dpmpp-sde:eta=0.0", "dpmpp-sde:r=0.3", "dpmpp-2m-sde", "dpmpp-2m-sde:solver_type=heun",
    "dpmpp-2m-sde:eta=0.0", "dpmpp-3m-sde", "dpmpp-3m-sde:eta=0.0", "dpmpp-2m-sde:grid=linspace",
    "lms", "lms:order=2", "lms:grid=logSNR", "ipndm", "ipndm:order=3", "ipndm-v", "ipndm-v:order=3",
    "heun:churn=10.0", "heun:churn=30.0,noise=1.007,tmax=1.0,tmin=0.01",
    "sa-solver", "sa-solver:corrector_order=4,predictor_order=3", "sa-solver:tau=0.0",
    "sa-solver:lower_order_final=false", "sa-solver:corrector_order=0",
    "restart", "restart:churn=10.0", "restart:intervals=4x1@0.3-1.0/3x2@0.06-0.3,s_noise=1.003",
    "deis", "deis:order=3", "deis:variant=logrho", "deis:order=2,variant=logrho", "deis:quadrature=reference",
    "deis:grid=logSNR", "deis:lower_order_final=false,variant=logrho", "deis:grid=trailing,variant=logrho",
    # added with flow matching (issue 20): the flow samplers from t = 1 and on other grids, the shift option
    "flow-euler", "flow-euler:shift=3.0", "flow-euler:grid=logSNR", "flow-heun", "flow-heun:shift=3.0",
    "flow-heun:grid=flow_linspace",
]
# specs renamed since the record was written (same method, same numbers): old name -> new name
RENAMED = {"dpmpp-3m:solver_type=taylor": "dpmpp-3m:d2_weight=exact,solver_type=taylor"}

# specs valid on one of a pair only (ts= without N= indexes the consistency checkpoint's own grid)
ONLY_MODELS = {"cm-multistep:ts=0/5/11/17": ("digits-cd",)}


def builtin_solvers() -> list[str]:
    """Registered solver names whose class lives in the `solvers` package (no plugins, no test solvers)."""
    from solvers.registry import _REGISTRY
    solvers.list_solvers()   # loads entry points, so that their absence from the list is deliberate
    return sorted(n for n, cls in _REGISTRY.items() if cls.__module__.startswith("solvers."))


def parse(spec: str) -> tuple[str, bool]:
    """(solver spec, whether it runs with FIXED_RATIOS)."""
    if spec.endswith(RATIOS_SUFFIX):
        return spec[:-len(RATIOS_SUFFIX)], True
    return spec, False


def make_solver(spec: str):
    return solvers.get_solver(parse(spec)[0])


def models_for(spec: str) -> tuple[str, ...]:
    solver = make_solver(spec)
    pair = CONSISTENCY_MODELS if solver.consistency_sampler else FLOW_MODELS if solver.flow_sampler else MODELS
    return tuple(m for m in pair if m in ONLY_MODELS.get(spec, pair))


def nfes_for(spec: str, schedule) -> list[int]:
    """The NFE of NFE_LADDER the solver plans (a fixed-NFE solver: its own NFE only)."""
    solver, valid = make_solver(spec), []
    # an adaptive solver's NFE is what it used, not a budget: its grid and samples are the same at any NFE
    wanted = 1 if solver.adaptive else 3
    for n in NFE_LADDER:
        if len(valid) == wanted:
            break
        try:
            solver.plan(schedule, n)
        except FixedNFE as e:
            return [e.nfe]
        except BelowMinimumNFE:
            continue
        valid.append(n)
    return valid


def guidances_for(model) -> tuple[float, ...]:
    """Guidance 4 where the harness runs it: a class-conditional model that is not a consistency model."""
    return GUIDANCES if model.num_classes is not None and getattr(model, "guidable", True) else (1.0,)


_MODELS: dict = {}


def load(name: str, dtype: str):
    if (name, dtype) not in _MODELS:
        _MODELS[name, dtype] = models.load_model(name, dtype=DTYPES[dtype])
    return _MODELS[name, dtype]


def cases(specs=None) -> list[dict]:
    """Every (spec, model, NFE, guidance, dtype) to record, in a fixed order."""
    out = []
    for spec in (SPECS if specs is None else specs):
        for m in models_for(spec):
            for dtype in ("float32", "float64") if m in FLOAT64_MODELS else ("float32",):
                for g in guidances_for(load(m, dtype)):
                    for nfe in nfes_for(spec, load(m, dtype).schedule):
                        out.append({"spec": spec, "model": m, "nfe": nfe, "guidance": g, "dtype": dtype})
    return out


def case_name(c: dict) -> str:
    return f"{c['spec']} on {c['model']} NFE={c['nfe']} guidance={c['guidance']:g} {c['dtype']}"


def sample(c: dict) -> tuple[torch.Tensor, int, list | None]:
    """The samples of case c and the NFE spent, drawn as bench/runner.py run_cell draws them (one batch, CPU)."""
    model = load(c["model"], c["dtype"])
    spec, fixed_ratios = parse(c["spec"])
    solver = solvers.get_solver(spec)
    plan = solver.plan(model.schedule, c["nfe"])
    ratios = None
    if solver.needs_calibration:
        if not fixed_ratios:
            raise ValueError(f"{c['spec']}: a DC solver needs ratio= or the {RATIOS_SUFFIX} form here")
        steps = plan.steps
        if steps > len(FIXED_RATIOS):
            raise ValueError(f"{c['spec']}: {steps} steps, FIXED_RATIOS has {len(FIXED_RATIOS)}")
        ratios = list(FIXED_RATIOS[:steps])
        solver = solver.with_ratios(ratios)
    elif fixed_ratios:
        raise ValueError(f"{c['spec']}: {RATIOS_SUFFIX} applies to a DC solver without ratio=")
    x_T = initial_noise(model, SEED, N_SAMPLES, DTYPES[c["dtype"]])
    y = class_labels(model, N_SAMPLES)
    d = solvers.Denoiser(model, y=y, guidance=c["guidance"], budget=None if solver.adaptive else c["nfe"])
    with torch.no_grad():
        x = solver.sample(d, x_T, plan, generator=NoiseStream(SEED, 0))
    check_output(x, x_T, c["spec"])
    return x, d.nfe, ratios


def sha256(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()


def compute(c: dict) -> dict:
    """The recorded entry of case c: the case, sha256 of its samples, nfe_used (and the explicit ratios used)."""
    x, nfe_used, ratios = sample(c)
    entry = {**c, "nfe_used": nfe_used, "sha256": sha256(x)}
    if ratios is not None:
        entry["ratios"] = ratios
    return entry


def meta() -> dict:
    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "system": platform.system(), "seed": SEED, "n_samples": N_SAMPLES,
            "threads": 1, "hash": "sha256 of x.contiguous().numpy().tobytes()"}


def add_new(names) -> int:
    """--add: compute the cases of specs the record does not hold yet, keep every recorded entry as it is."""
    record = json.loads(OUT.read_text())
    old = {e["spec"] for e in record["entries"]}
    new = [s for s in SPECS if s not in old]
    entries = record["entries"] + [compute(c) for c in cases(new)]
    want = [tuple(c.values()) for c in cases()]
    got = [tuple(e[k] for k in ("spec", "model", "nfe", "guidance", "dtype")) for e in entries]
    if got != want:
        raise SystemExit("the recorded specs are not a prefix of SPECS in order: regenerate deliberately instead")
    OUT.write_text(json.dumps({"meta": record["meta"], "specs": SPECS, "entries": entries}, indent=1) + "\n")
    print(f"added {len(entries) - len(record['entries'])} entries for {', '.join(new)} to {OUT}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    names = builtin_solvers()
    missing = sorted(set(names) - {make_solver(s).name for s in SPECS})
    if missing:
        raise SystemExit(f"SPECS has no spec for registered solver(s): {', '.join(missing)}")
    odd = [s for s in SPECS if make_solver(s).spec != parse(s)[0]]
    if odd or len(set(SPECS)) != len(SPECS):
        raise SystemExit(f"SPECS must hold distinct canonical specs; not canonical: {', '.join(odd)}")
    if "--add" in argv:
        return add_new(names)
    t0 = time.perf_counter()
    entries = []
    for c in cases():
        t = time.perf_counter()
        entries.append(compute(c))
        dt = time.perf_counter() - t
        if dt > 2:
            print(f"  slow: {case_name(c)} {dt:.1f}s", file=sys.stderr)
    wall = time.perf_counter() - t0
    OUT.write_text(json.dumps({"meta": meta(), "specs": SPECS, "entries": entries}, indent=1) + "\n")
    print(f"wrote {len(entries)} entries for {len(SPECS)} specs ({len(names)} solvers) to {OUT} in {wall:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
