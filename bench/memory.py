"""A cell's memory, estimated before it runs: `plan()` refuses a cell whose estimate is over the run's limit.

The estimate is a rough upper bound of a cell's peak resident memory (host and device together), in bytes,
from its sizes alone (no sampling): N samples of D elements of `itemsize` bytes, its batch, NFE, solver and
model. It is the largest of the phases a cell goes through one after another, each on top of what the whole
cell holds (the interpreter with torch, the model's weights, the time grid and x_T):

- noise: x_T drawn in float64 blocks of 1024 (the blocks, their concatenation, the scaled copy);
- sampling: the solver's state per batch (its history, working copies, adaptive stages, noise draws), the
  network's activations per batch (a per-model constant; guidance doubles the batch) and the samples so far;
- scoring: the samples (kept, their finite copy) plus the largest working memory of the metrics, which run one
  after another (FID/KID/cond_acc, traj_rmse's reference solve) and the FID features kept for fid_changes.

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
FEATURE_DIMS = {"digits-classifier": 128, "inception-v3-compat": 2048}
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


def _metrics(spec, model, n: int, elements: int, itemsize: int, guidance: float) -> dict[str, int]:
    """Working memory of each metric the cell computes (they run one after another), bytes."""
    wanted, out = set(spec.metrics), {}
    kind = model.feature_extractor
    if wanted & {"fid", "kid", "cond_acc"}:
        if kind == "data":
            m = min(KID_SUBSET, n, KID_REFERENCE)
            from .metrics import moment_chunk_rows
            out["FID/KID"] = 6 * m * m * 8 + 2 * KID_REFERENCE * elements * 8 + \
                3 * min(n, moment_chunk_rows(elements)) * elements * 8
        elif kind == "inception-v3-compat":
            fixed = INCEPTION_FIXED_BYTES + (0 if spec.fid_stats else INCEPTION_REFERENCE_BYTES)
            # float64 copy, uint8 and 3-channel images; float32 features and torch-fidelity's concatenation
            # (the float64 moments are chunked: INCEPTION_FIXED_BYTES covers them)
            per = elements * (8 + 1 + 3) + 2 * FEATURE_DIMS[kind] * 4
            out["FID/KID"] = fixed + n * per
        else:   # torch-fidelity with the digits classifier (batches of 1,000), the model-space copies
            out["FID/KID"] = 256 * 2 ** 20 + n * (3 * elements * 4 + 3 * FEATURE_DIMS.get(kind, 128) * 8)
    if "fid" in wanted and kind in ("data", "digits-classifier"):   # features kept for fid_changes
        dim = elements if kind == "data" else FEATURE_DIMS[kind]
        out["FID features"] = n * dim * 8 + (CLASSIFIER_BATCH_BYTES if kind != "data" else 0)
    if "traj_rmse" in wanted:
        k = min(spec.reference_samples or n, n)
        ode = model.ode_model
        bs = min(spec.batch_size or reference_batch(ode, k, guidance), k)
        solve = (ADAPTIVE_STAGES + SOLVER_WORK_COPIES) * bs * elements * 8 + activations(ode, bs, 8, guidance)
        out["traj_rmse reference solve"] = solve + 6 * k * elements * 8
    return out


def estimate_cell_bytes(spec, model, solver, nfe: int, n_samples: int | None = None,
                        guidance: float = 1.0) -> tuple[int, dict[str, int]]:
    """(peak bytes, the named parts of the largest phase) of one cell of `spec` with this model and solver."""
    n = int(spec.samples if n_samples is None else n_samples)
    itemsize = 8 if spec.dtype == "float64" else 4
    elements = _elements(model)
    bs = min(spec.batch_size or n, n)
    sample = n * elements * itemsize
    steps = 2 if solver.adaptive else int(nfe) + 2
    held = {"interpreter and torch": BASE_BYTES, "model weights": _module_bytes(model),
            f"time grid (NFE {nfe})": steps * GRID_BYTES_PER_STEP, "x_T": sample}
    padded = -(-n // NOISE_BLOCK) * NOISE_BLOCK
    phases = {
        "noise": {f"x_T draw ({n} samples, float64)": 3 * padded * elements * 8},
        "sampling": {f"solver state (batch {bs})": solver_state(solver, bs, elements),
                     f"network activations (batch {bs})": activations(model, bs, itemsize, guidance),
                     f"samples ({n})": 2 * sample},
    }
    metrics = _metrics(spec, model, n, elements, itemsize, guidance)
    scoring = {f"samples ({n})": 2 * sample}
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
    elif big.startswith(("solver state", "network activations")) and (spec.batch_size or spec.samples) > 1:
        per_batch = sum(v for k, v in parts.items() if k.startswith(("solver state", "network activations")))
        per = per_batch / (spec.batch_size or spec.samples)
        room = limit_gb * GB - (total - per_batch)
        fits = int(room // per)
        hints.append(f"--batch-size {2 ** (fits.bit_length() - 1)}" if fits >= 1 else "fewer --samples")
    elif big.startswith(("x_T", "samples", "metric")):
        hints.append("fewer --samples")
    machine = physical_memory_bytes()
    default = f"default {DEFAULT_LIMIT_FRACTION:.0%} of this machine's {_gb(machine)}" if machine else "default 0 here"
    hints.append("a higher --memory-limit-gb (0: no check)")
    raise SpecError(f"cell {what} with {spec.samples} samples needs an estimated {_gb(total)} of memory "
                    f"({big}: {_gb(parts[big])}), over the limit of {limit_gb:g} GB (memory_limit_gb, {default}); "
                    f"use {' or '.join(hints)}")
