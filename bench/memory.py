"""A cell's memory, estimated before it runs: `plan()` refuses a cell whose estimate is over the run's limit.

The estimate is a rough upper bound of a cell's peak resident memory (host and device together), in bytes,
from its sizes alone (no sampling): N samples of D elements of `itemsize` bytes, its batch, shard, NFE, solver
and model. A cell streams its samples batch by batch into one feature pass (bench/shard.py) and keeps only
per-sample features (and the samples themselves with save_samples or a metric that reads them), so the estimate
is the largest of these phases, each on top of what every cell holds (the interpreter with torch, the model's
weights, the time grid), with the driver and a worker in one process (the in-process executor):

- sampling: one batch's x_T (drawn in float64 blocks of 1024), the solver's state per batch (its history,
  working copies, adaptive stages, noise draws), the network's activations per batch (a per-model constant;
  guidance doubles the batch), and what the shard keeps of its rows so far;
- scoring: the cell's kept per-sample quantities (features, in float32 and their float64 copy) plus the largest
  working memory of the metrics, which run one after another (FID/KID/cond_acc; traj_rmse's reference, solved
  in batches and held for its k rows).

Each model declares its activations as `activation_bytes_per_sample` and `activation_bytes_fixed`
(models.base.DiffusionModel). The built-in models' constants were measured on the CPU when this was written (peak
RSS over one network call: gmm2d 1.6 kB a sample, digits 19 kB, digits-oracle 2.6 kB plus its 4,096-row logit
blocks) and are kept about 1.5-2x above; an exact flow map (`integrates` its base) costs its base's plus dopri5's
stages. Models declaring none (hub UNets) get DEFAULT_ACTIVATION_FACTOR bytes per sample element. A process
with torch imported is about 0.8 GB resident before any cell (BASE_BYTES), so a limit below about 1 GB refuses
every cell.
"""
from __future__ import annotations

import math
import os

from models.classifier import CLASSIFIERS, FEATURE

GB = 1e9
BASE_BYTES = 800 * 2 ** 20     # python with torch (650 MB resident alone), numpy, scipy, pandas, matplotlib
NOISE_BLOCK = 1024             # x_T is drawn in float64 blocks of this many samples (solvers/noise.py)
GRID_BYTES_PER_STEP = 64       # the grid (float64, several temporaries) and per-step Python objects of a solver
SOLVER_WORK_COPIES = 8         # x-sized float64 temporaries of one solver step besides its history
ADAPTIVE_STAGES = 12           # dopri5's 7 stages, the error estimate and the interpolation of torchdiffeq
STOCHASTIC_COPIES = 2          # a stochastic solver's noise draw (numpy float64 block and its tensor)
DEFAULT_ACTIVATION_FACTOR = 2800   # bytes of network activations per sample element (a diffusers UNet, float32)
REFERENCE_BATCH_BYTES = 1 << 30    # traj_rmse's dopri5 reference solve runs in batches of about this much
DEFAULT_LIMIT_FRACTION = 0.5       # default memory_limit_gb: this share of the machine's physical memory

# per-sample features the FID of each feature extractor computes (float64 bytes) and fixed working memory
FEATURE_DIMS = {"inception-v3-compat": 2048, **{name: int(FEATURE) for name in CLASSIFIERS}}
CLASSIFIER_BATCH_BYTES = 4_096 * 40_000       # the digits classifier's activations, 4,096 samples a batch
INCEPTION_FIXED_BYTES = 2 ** 30                # InceptionV3 weights (95 MB) and a batch of 299x299 activations
INCEPTION_REFERENCE_BYTES = 2 ** 30            # a reference dataset's features (50,000 x 2048 float32) and moments
KID_SUBSET = 1000
KID_REFERENCE = 2000


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (the cgroup's limit when it is lower), None when unknown."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or 0 < int(text) < total):
            total = int(text)
    return total


def default_memory_limit_gb() -> float:
    """Half this machine's physical memory, in GB (10^9 bytes), rounded down to 0.1; 0 (no check) if unknown."""
    total = physical_memory_bytes()
    return 0.0 if not total else math.floor(total * DEFAULT_LIMIT_FRACTION / GB * 10) / 10


def _elements(model) -> int:
    return max(1, math.prod(int(s) for s in model.shape))


def _module_bytes(obj, depth: int = 0) -> int:
    """Bytes of the torch parameters and buffers a model holds (its networks, a wrapped base model's)."""
    import torch

    from models.base import DiffusionModel   # here: bench.spec imports this module without the models
    if depth > 2:
        return 0
    total = 0
    for v in vars(obj).values():
        if isinstance(v, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*v.parameters(), *v.buffers()))
        elif isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, DiffusionModel):   # a wrapped model (a flow map's base, a teacher view's)
            total += _module_bytes(v, depth + 1)
    return total


def activations(model, batch: int, itemsize: int, guidance: float = 1.0) -> int:
    """Rough bytes of one network call on `batch` samples (guidance != 1 evaluates 2 x batch)."""
    n = batch * (2 if guidance != 1 and not model.applies_guidance else 1)
    per, fixed = model.activation_bytes_per_sample, model.activation_bytes_fixed
    if per is None and model.integrates is not None:   # an exact flow map: its base under dopri5
        inner = activations(model.integrates, batch, itemsize, guidance)
        return inner + (ADAPTIVE_STAGES + SOLVER_WORK_COPIES) * batch * _elements(model) * 8
    if per is None:
        per = DEFAULT_ACTIVATION_FACTOR * _elements(model)
    return int(n * per * max(1, itemsize // 4) + fixed)


def solver_state(solver, batch: int, elements: int) -> int:
    """The solver's state on one batch: its history (multistep), working copies, adaptive stages, noise."""
    copies = solver.history_length + SOLVER_WORK_COPIES + (ADAPTIVE_STAGES if solver.adaptive else 0) + \
        (STOCHASTIC_COPIES if solver.stochastic else 0)
    return copies * batch * elements * 8


def reference_batch(model, n: int, guidance: float = 1.0) -> int:
    """Samples per batch of the dopri5 reference solve when the run gives no batch size: all n while their
    solve fits in REFERENCE_BATCH_BYTES (every committed run), else as many as fit (at least 1)."""
    fixed = activations(model, 0, 8, guidance)
    per = activations(model, 1, 8, guidance) - fixed + (ADAPTIVE_STAGES + SOLVER_WORK_COPIES) * _elements(model) * 8
    return max(1, min(n, max(0, REFERENCE_BATCH_BYTES - fixed) // max(1, per)))


def _kept_per_sample(spec, model, elements: int, itemsize: int) -> int:
    """Bytes a cell keeps per sample until it is scored: FID features (float32 and a float64 copy), the finite
    mask and predictions, and the samples themselves when kept."""
    from .sharding import what_to_keep
    keep = what_to_keep(spec)
    kind = model.feature_extractor
    per = 16
    if keep["features"]:
        per += (elements if kind == "data" else FEATURE_DIMS.get(kind, 128)) * 12
    if keep["samples"]:
        per += 2 * elements * itemsize
    return per


def _metrics(spec, model, n: int, elements: int, itemsize: int, guidance: float) -> dict[str, int]:
    """Working memory of each metric the cell computes (they run one after another), bytes."""
    from .metrics import KID_BLOCK, kid_whole_sets, moment_chunk_rows
    wanted, out = set(spec.metrics), {}
    kind = model.feature_extractor
    dim = elements if kind == "data" else FEATURE_DIMS.get(kind, 128)
    if wanted & {"fid", "kid", "cond_acc", "precision", "recall"}:
        m = min(KID_SUBSET, n)
        ref = KID_REFERENCE * dim * 8 if kind == "data" else \
            (0 if spec.fid_stats else INCEPTION_REFERENCE_BYTES) if kind == "inception-v3-compat" else \
            2000 * dim * 8
        n_ref = KID_REFERENCE if kind == "data" else 2000
        kid = 2 * KID_BLOCK * 8 + (n + n_ref) * spec.kid_subsets * 8 if \
            kid_whole_sets(n, n_ref, dim, spec.kid_subsets, m) else 6 * m * m * 8
        fixed = INCEPTION_FIXED_BYTES if kind == "inception-v3-compat" else 0
        out["FID/KID"] = fixed + ref + kid + 3 * min(n, moment_chunk_rows(dim)) * dim * 8
    if "traj_rmse" in wanted:
        k = min(spec.reference_samples or n, n)
        ode = model.ode_model
        bs = min(spec.batch_size or reference_batch(ode, k, guidance), k)
        solve = (ADAPTIVE_STAGES + SOLVER_WORK_COPIES) * bs * elements * 8 + activations(ode, bs, 8, guidance)
        out["traj_rmse reference solve"] = solve + 2 * k * elements * 8
    return out


def estimate_cell_bytes(spec, model, solver, nfe: int, n_samples: int | None = None,
                        guidance: float = 1.0) -> tuple[int, dict[str, int]]:
    """(peak bytes, the named parts of the largest phase) of one cell of `spec` with this model and solver."""
    from .sharding import shard_ranges
    n = int(spec.samples if n_samples is None else n_samples)
    itemsize = 8 if spec.dtype == "float64" else 4
    elements = _elements(model)
    bs = min(spec.batch_size or n, n)
    shard = shard_ranges(n, bs, spec.shard_samples)[0][1]
    steps = 2 if solver.adaptive else int(nfe) + 2
    held = {"interpreter and torch": BASE_BYTES, "model weights": _module_bytes(model),
            f"time grid (NFE {nfe})": steps * GRID_BYTES_PER_STEP}
    per = _kept_per_sample(spec, model, elements, itemsize)
    padded = (-(-bs // NOISE_BLOCK) + 1) * NOISE_BLOCK
    phases = {
        "sampling": {f"x_T draw (batch {bs}, float64)": 3 * padded * elements * 8,
                     f"solver state (batch {bs})": solver_state(solver, bs, elements),
                     f"network activations (batch {bs})": activations(model, bs, itemsize, guidance),
                     f"samples kept ({shard} in a shard)": shard * per},
    }
    metrics = _metrics(spec, model, n, elements, itemsize, guidance)
    scoring = {f"samples kept ({n})": n * per}
    if metrics:
        name = max(metrics, key=metrics.get)
        scoring[f"metric {name}"] = metrics[name]
    phases["scoring"] = scoring
    peak = max(phases.values(), key=lambda p: sum(p.values()))
    parts = {**held, **peak}
    return sum(parts.values()), parts


def _gb(b: float) -> str:
    if b >= 100 * GB:
        return f"{b / GB:,.0f} GB"
    return f"{b / GB:.3g} GB" if b >= 0.1 * GB else f"{b / 2 ** 20:.3g} MB"


def check_cell_memory(spec, model, solver, nfe: int, guidance: float = 1.0, label: str | None = None):
    """Raise SpecError (one line: the estimate, its largest part, the limit and how to change it) when a cell of
    `spec` with this model, solver and NFE would need more than spec.memory_limit_gb; 0 turns the check off."""
    limit_gb = float(spec.memory_limit_gb or 0)
    if limit_gb <= 0:
        return
    total, parts = estimate_cell_bytes(spec, model, solver, nfe, guidance=guidance)
    if total <= limit_gb * GB:
        return
    from solvers.options import SpecError
    big = max(parts, key=parts.get)
    what = label or f"{model.spec} {solver.spec} NFE={nfe}" + \
        (f" g={guidance:g}" if guidance != 1 else "")
    hints = []
    if big.startswith("time grid"):
        hints.append("a lower --nfe")
    elif big.startswith(("solver state", "network activations", "x_T")) and (spec.batch_size or spec.samples) > 1:
        per_batch = sum(v for k, v in parts.items() if k.startswith(("solver state", "network activations", "x_T")))
        per = per_batch / (spec.batch_size or spec.samples)
        room = limit_gb * GB - (total - per_batch)
        fits = int(room // per)
        hints.append(f"--batch-size {2 ** (fits.bit_length() - 1)}" if fits >= 1 else "fewer --samples")
    elif big.startswith(("samples", "metric")):
        hints.append("fewer --samples")
    machine = physical_memory_bytes()
    default = f"default {DEFAULT_LIMIT_FRACTION:.0%} of this machine's {_gb(machine)}" if machine else "default 0 here"
    hints.append("a higher --memory-limit-gb (0: no check)")
    raise SpecError(f"cell {what} with {spec.samples} samples needs an estimated {_gb(total)} of memory "
                    f"({big}: {_gb(parts[big])}), over the limit of {limit_gb:g} GB (memory_limit_gb, {default}); "
                    f"use {' or '.join(hints)}")
