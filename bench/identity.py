"""A cell's identity: everything that can change its numbers, as a canonical dict and its hash.

Two cells with one identity are the same computation; a run directory never holds two cells of one
(model, solver, NFE, guidance, seed) with different identities (bench/runner.py refuses, or moves the old ones
aside with --replace), so no table mixes two setups. The identity holds
- the model: name, every option as resolved, the sha256 of its weights;
- the solver: name, every option as resolved (`ddim:eta=0` and `ddim` are one solver; option order is
  irrelevant), and the sha256 of its source file when it comes from outside the package (a plugin);
- the coordinates: NFE, guidance (exactly), seed;
- the protocol: samples, dtype (and the network's model_dtype when it differs), device type, batch size,
  metrics and their settings (reference tolerance and
  sample count of traj_rmse, KID subsets), the FID feature extractor and reference files (sha256), and for
  calibrated solvers the calibration file they read.
nfebench's own code version is not in it (run.json records the git commit).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path

import solvers
from models.classifier import CLASSIFIERS, classifier_info
from models.weights_store import sha256_of

from .metric_families import needing

IDENTITY_VERSION = 1
_PACKAGE_DIR = Path(solvers.__file__).resolve().parent
_SHA_CACHE: dict = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (cached per path, size and modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(p)
    return _SHA_CACHE[key]


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)


def solver_identity(solver) -> dict:
    out = {"name": solver.name, "options": {k: _plain(v) for k, v in solver.options.items()}}
    src = inspect.getsourcefile(type(solver))
    if src and _PACKAGE_DIR not in Path(src).resolve().parents:
        out["source_sha256"] = file_sha256(src)   # a plugin: editing it makes new cells
    return out


def model_identity(model_spec: str, model) -> dict:
    from models import identity_options, model_options
    name, opts = model_options(model_spec)
    return {"name": name, "options": {k: _plain(v) for k, v in sorted(identity_options(name, opts).items())},
            "weights_sha256": model.weights_sha256}


def protocol(spec, model, n_samples: int) -> dict:
    """The run settings that shape every cell of a model (what a rerun into the same directory must share)."""
    metrics = sorted(spec.metrics)
    bs = spec.batch_size if 0 < spec.batch_size < n_samples else n_samples
    out = {"n_samples": n_samples, "dtype": spec.dtype, "device": str(spec.device).split(":")[0],
           "batch_size": bs, "metrics": metrics}
    if spec.model_dtype and spec.model_dtype != spec.dtype:   # mixed precision: the network's own dtype
        out["model_dtype"] = spec.model_dtype
    if "traj_rmse" in metrics:
        out["reference_rtol"] = float(spec.reference_rtol)
        out["reference_samples"] = min(spec.reference_samples or n_samples, n_samples)
    if "kid" in metrics:
        out["kid_subsets"] = spec.kid_subsets
    # the metrics scored in a feature space or with its classifier (FID, KID, cond_acc, precision/recall)
    if set(metrics) & {"cond_acc"} or needing(metrics, "features"):
        out["features"] = feature_identity(spec, model)
    return out


def feature_identity(spec, model) -> dict:
    """What FID/KID/cond_acc are measured with: the feature extractor's weights and the reference."""
    kind = model.feature_extractor
    out = {"extractor": kind}
    if kind in CLASSIFIERS:
        out["weights_sha256"] = classifier_info(name=kind)["sha256"]
        out["reference"] = model.fid_reference
    elif kind == "inception-v3-compat":
        out["weights_sha256"] = file_sha256(spec.inception_weights) if spec.inception_weights else \
            "torch-fidelity-default"
        if spec.fid_stats:
            out["fid_stats_sha256"] = file_sha256(spec.fid_stats)
        else:
            out["reference"] = str(model.fid_reference)
    return out


def cell_identity(spec, model_spec: str, model, solver, nfe: int, guidance: float, seed: int,
                  n_samples: int) -> dict:
    ident = {"version": IDENTITY_VERSION, "model": model_identity(model_spec, model),
             "solver": solver_identity(solver), "nfe": int(nfe), "guidance": float(guidance), "seed": int(seed),
             "protocol": protocol(spec, model, n_samples)}
    if solver.needs_calibration:
        ident["calibration"] = str(Path(spec.calibration).resolve()) if spec.calibration else "run directory"
        if solver.ratios == "cpr":     # the prediction depends on every entry it is fitted on
            from .calibration import cpr_searched
            fitted_on = json.dumps(cpr_searched(spec, model_spec, solver), separators=(",", ":"))
            ident["cpr_fitted_on"] = hashlib.sha256(fitted_on.encode()).hexdigest()[:16]
    return ident


def identity_hash(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'samples: 2000 -> 1000'-style lines for what differs between two identities (or protocols)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(none)"), new.get(k, "(none)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} -> {_short(b)}")
    return out


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 20 else s[:12] + "..."
