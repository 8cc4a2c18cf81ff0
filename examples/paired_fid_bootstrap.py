"""Does FID really change between two NFEs? A paired bootstrap over the samples of one seed.

    python examples/paired_fid_bootstrap.py --model digits --solver dpmpp-2m --nfe 5,10,20,50,200 --seeds 0,1,2

Each (seed, NFE) draws the benchmark's own samples (the same x_T and labels as a `nfebench run` cell, so the
FIDs equal the table's) and takes their digits-classifier features. One bootstrap replicate resamples the
sample indices with replacement, the same indices at every NFE, and recomputes every FID against the fixed
reference statistics; the 2.5 and 97.5 percentiles of FID(NFE b) - FID(NFE a) over the replicates bound the
change from a to b. An interval that contains 0 says the table cannot tell the two NFEs apart on that seed.

A run's own cells need no regeneration: `nfebench table RUN --changes` computes the same intervals from the
features the run saved. This script is for NFEs a run does not have (NFE 200, say) and for runs made before
features were saved.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.nfe_changes import FrechetToReference, bootstrap_counts, cell_features, cell_replicates, paired_changes
from bench.nfe_changes import reference_moments as model_reference_moments
from bench.runner import class_labels, initial_noise
from models import load_model
from solvers import Denoiser, get_solver


def features(x: torch.Tensor, model_spec: str = "digits") -> np.ndarray:
    """The FID features of model-space samples, as the benchmark scores them (the digits classifier's for the
    digits models: clipped, non-finite ones dropped)."""
    return cell_features(load_model(model_spec), x).astype(np.float64)


def reference_moments(model_spec: str = "digits") -> tuple[np.ndarray, np.ndarray]:
    return model_reference_moments(load_model(model_spec))


def fid(f: np.ndarray, ref) -> float:
    return float(FrechetToReference(*ref)(torch.from_numpy(f.mean(0))[None],
                                          torch.from_numpy(np.cov(f, rowvar=False))[None])[0])


def cell_samples(model, solver_spec: str, nfe: int, seed: int, n: int, guidance: float = 1.0) -> torch.Tensor:
    """The samples of benchmark cell (model, solver, nfe, guidance, seed) with n samples."""
    solver = get_solver(solver_spec)
    x_T = initial_noise(model, seed, n, torch.float32)
    d = Denoiser(model, y=class_labels(model, n), guidance=guidance, budget=None if solver.adaptive else nfe)
    with torch.no_grad():
        return solver.sample(d, x_T, solver.plan(model.schedule, nfe),
                             generator=torch.Generator().manual_seed(10_007 * seed + 1))


def paired_bootstrap(feats: dict, ref, replicates: int = 200, seed: int = 0) -> dict:
    """{(a, b): (FID_b - FID_a, lo, hi)} for consecutive keys of feats (NFE -> features of the same samples,
    all finite), with bench.nfe_changes' paired bootstrap (the one `nfebench table --changes` uses)."""
    keys = list(feats)
    n = min(len(f) for f in feats.values())
    frechet, counts = FrechetToReference(*ref), bootstrap_counts(n, replicates, seed)
    fids = {(seed, k): fid(feats[k][:n], ref) for k in keys}
    reps = {(seed, k): cell_replicates(np.arange(n), feats[k][:n], counts, frechet) for k in keys}
    return {(a, b): paired_changes(fids, reps, [(seed, a, b)]) for a, b in zip(keys[:-1], keys[1:])}


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
    model, ref = load_model(a.model), reference_moments(a.model)
    nfes = [int(v) for v in a.nfe.split(",")]
    print(f"{a.model}, {a.solver}, guidance {a.guidance:g}, {a.samples} samples, {a.replicates} paired replicates")
    print("| seed | " + " | ".join(f"FID NFE {k}" for k in nfes) + " | " +
          " | ".join(f"{x} -> {y} (95 %)" for x, y in zip(nfes[:-1], nfes[1:])) + " |")
    print("|---|" + "---:|" * (2 * len(nfes) - 1))
    for s in (int(v) for v in a.seeds.split(",")):
        feats = {k: features(cell_samples(model, a.solver, k, s, a.samples, a.guidance), a.model) for k in nfes}
        out = paired_bootstrap(feats, ref, a.replicates, seed=s)
        fids = [f"{fid(feats[k], ref):.3f}" for k in nfes]
        diffs = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in out.values()]
        print(f"| {s} | " + " | ".join(fids) + " | " + " | ".join(diffs) + " |", flush=True)


if __name__ == "__main__":
    main()
