"""Does FID really change between two NFEs? A paired bootstrap over the samples of one seed.

    python examples/paired_fid_bootstrap.py --model digits --solver dpmpp-2m --nfe 5,10,20,50,200 --seeds 0,1,2

Each (seed, NFE) draws the benchmark's own samples (the same x_T and labels as a `nfebench run` cell, so the
FIDs equal the table's) and takes their digits-classifier features. One bootstrap replicate resamples the
sample indices with replacement, the same indices at every NFE, and recomputes every FID against the fixed
reference statistics; the 2.5 and 97.5 percentiles of FID(NFE b) - FID(NFE a) over the replicates bound the
change from a to b. An interval that contains 0 says the table cannot tell the two NFEs apart on that seed.
"""
from __future__ import annotations

import argparse
from functools import lru_cache

import numpy as np
import torch

from bench.fidelity import _clean
from bench.metrics import frechet_distance
from bench.runner import class_labels, initial_noise
from models import load_model
from models.classifier import load_classifier
from models.digits_data import load_digits_tensors
from solvers import Denoiser, get_solver


def features(x: torch.Tensor) -> np.ndarray:
    """The digits classifier's FID features of model-space samples (clipped, non-finite ones dropped, as the
    benchmark scores them)."""
    x, _ = _clean(x, None)
    with torch.no_grad():
        return _classifier().features(x).double().numpy()


@lru_cache(maxsize=1)
def _classifier():
    return load_classifier().eval()


def reference_moments() -> tuple[np.ndarray, np.ndarray]:
    f = features(load_digits_tensors()[0])
    return f.mean(0), np.cov(f, rowvar=False)


def fid(f: np.ndarray, ref) -> float:
    return frechet_distance(f.mean(0), np.cov(f, rowvar=False), *ref)


def cell_samples(model, solver_spec: str, nfe: int, seed: int, n: int, guidance: float = 1.0) -> torch.Tensor:
    """The samples of benchmark cell (model, solver, nfe, guidance, seed) with n samples."""
    solver = get_solver(solver_spec)
    x_T = initial_noise(model, seed, n, torch.float32)
    d = Denoiser(model, y=class_labels(model, n), guidance=guidance, budget=None if solver.adaptive else nfe)
    with torch.no_grad():
        return solver.sample(d, x_T, solver.grid_for(model.schedule, nfe),
                             generator=torch.Generator().manual_seed(10_007 * seed + 1))


def paired_bootstrap(feats: dict, ref, replicates: int = 200, seed: int = 0) -> dict:
    """{(a, b): (FID_b - FID_a, lo, hi)} for consecutive keys of feats (NFE -> features of the same samples)."""
    keys = list(feats)
    n = min(len(f) for f in feats.values())
    point = {k: fid(feats[k], ref) for k in keys}
    rng = np.random.default_rng(seed)
    diffs = {p: [] for p in zip(keys[:-1], keys[1:])}
    for _ in range(replicates):
        idx = rng.integers(0, n, n)
        boot = {k: fid(feats[k][idx], ref) for k in keys}
        for a, b in diffs:
            diffs[(a, b)].append(boot[b] - boot[a])
    return {(a, b): (point[b] - point[a], *np.percentile(d, [2.5, 97.5])) for (a, b), d in diffs.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits")
    p.add_argument("--solver", default="dpmpp-2m")
    p.add_argument("--nfe", default="5,10,20,50")
    p.add_argument("--seeds", default="0")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--replicates", type=int, default=200)
    a = p.parse_args(argv)
    model, ref = load_model(a.model), reference_moments()
    nfes = [int(v) for v in a.nfe.split(",")]
    print(f"{a.model}, {a.solver}, guidance {a.guidance:g}, {a.samples} samples, {a.replicates} paired replicates")
    print("| seed | " + " | ".join(f"FID NFE {k}" for k in nfes) + " | " +
          " | ".join(f"{x} -> {y} (95 %)" for x, y in zip(nfes[:-1], nfes[1:])) + " |")
    print("|---|" + "---:|" * (2 * len(nfes) - 1))
    for s in (int(v) for v in a.seeds.split(",")):
        feats = {k: features(cell_samples(model, a.solver, k, s, a.samples, a.guidance)) for k in nfes}
        out = paired_bootstrap(feats, ref, a.replicates, seed=s)
        fids = [f"{fid(feats[k], ref):.3f}" for k in nfes]
        diffs = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in out.values()]
        print(f"| {s} | " + " | ".join(fids) + " | " + " | ".join(diffs) + " |", flush=True)


if __name__ == "__main__":
    main()
