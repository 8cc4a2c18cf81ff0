"""Everything a run needs from outside, resolved and opened before its first cell.

A mistyped --fid-stats or --inception-weights path, a missing InceptionV3 file, a corrupt statistics file or a
bad calibration path used to surface inside each cell, after its samples were drawn ("rerun to retry", which
could not help). `preflight(spec)` (called at the start of bench.runner.plan) opens each of them now and stops
with one line (SpecError) naming the file and what is wrong:
- plugin files: exist, are files, readable (plan() then runs them, bench/plugins.py);
- fid_stats: read and checked as the cells will read it (bench.inception.load_fid_stats);
- inception_weights: exists, readable, loads weights-only (bench/safe_load.py) as a state dict of tensors;
  when a hub model (hf:<dir>, only if diffusers is importable) will be scored with InceptionV3, the feature
  extractor is built now, from that file or torch-fidelity's download, and kept for the run's cells;
- a model's FID reference dataset (reference=NAME): a torch-fidelity dataset name or a directory;
- the calibration file (spec.calibration, else RUN/calibration.json): not a directory, its folder can hold it,
  and an existing one parses as calibration entries. A bad RUN/calibration.json is a run file: it is moved aside
  (bench/runfiles.py) and its ratios searched again; a bad user-given file is an error.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from solvers.options import SpecError


def preflight(spec, load=None) -> None:
    """Open and check every file and resource the run `spec` (a bench.spec.RunConfig) needs; SpecError if one is
    bad. `load(model_spec)` gives a model (default: models.load_model)."""
    for p in spec.plugins:
        _check_plugin(p)
    if spec.fid_stats:
        from .inception import load_fid_stats
        load_fid_stats(spec.fid_stats)
    if spec.inception_weights:
        _readable_file(spec.inception_weights, "InceptionV3 weights file")
    _check_calibration(spec)
    built = _check_inception(spec, load)
    if spec.inception_weights and not built:
        check_inception_weights(spec.inception_weights)


def _readable_file(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SpecError(f"{what} not found: {path}")
    if not p.is_file():
        raise SpecError(f"{what} {path} is not a file")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise SpecError(f"{what} {path} cannot be read: {e.strerror or type(e).__name__}") from None
    return p


def _check_plugin(path: str):
    """Exists, is a file, can be read (what it does when run is bench.plugins.load_plugin_file's, in plan())."""
    _readable_file(path, "plugin file")


def check_inception_weights(path: str):
    """The file loads weights-only as a non-empty state dict of tensors (what torch-fidelity's InceptionV3 takes)."""
    from .safe_load import UnsafeOrCorruptFile, load_torch_file
    _readable_file(path, "InceptionV3 weights file")
    try:
        sd = load_torch_file(path)
    except UnsafeOrCorruptFile as e:
        raise SpecError(f"InceptionV3 weights file {path} cannot be loaded: {e.reason}") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise SpecError(f"InceptionV3 weights file {path} is not a state dict of tensors")


def _check_inception(spec, load) -> bool:
    """Build the InceptionV3 extractor when a hub model will be scored with it (True when built)."""
    if not set(spec.metrics) & {"fid", "kid"}:
        return False
    from models import model_options
    hub = [m for m in spec.models if model_options(m)[0].startswith("hf:")]
    if not hub:
        return False
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False   # plan() says the hub extra is missing
    if load is None:
        from models import load_model as load
    need = False
    for m in hub:
        model = load(m)   # a missing or bad checkpoint: its own one-line SpecError, as plan() would give
        if model.feature_extractor != "inception-v3-compat":
            continue
        reference = model.fid_reference
        if spec.fid_stats:
            need = True
        elif reference:
            _check_reference(reference)
            need = True
        # neither: plan() stops with "has no FID reference"
    if not need:
        return False
    from .inception import feature_extractor
    cuda = torch.cuda.is_available() and str(spec.device).startswith("cuda")   # as the cells decide it
    feature_extractor(spec.inception_weights or None, cuda)   # kept (bench.inception._EXTRACTORS) for the cells
    return bool(spec.inception_weights)


def _check_reference(reference: str):
    if os.path.isdir(reference):
        return
    from torch_fidelity.registry import DATASETS_REGISTRY
    if reference not in DATASETS_REGISTRY:
        raise SpecError(f"unknown FID reference '{reference}': not a torch-fidelity dataset "
                        f"({', '.join(DATASETS_REGISTRY)}) nor a directory of images")


def _calibration_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object of calibration entries"
    for key, e in data.items():
        if not isinstance(e, dict):
            return f"entry '{key}' is not an object"
        ratios = e.get("ratios")
        if not isinstance(ratios, list) or not all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                                   and math.isfinite(r) for r in ratios):
            return f"entry '{key}' has no list of finite 'ratios'"
        for k in ("final_mse_ratio_1", "final_mse_calibrated"):
            if not isinstance(e.get(k), (int, float)) or isinstance(e.get(k), bool):
                return f"entry '{key}' has no number '{k}'"
    return None


def _check_calibration(spec):
    user = bool(spec.calibration)
    if user:
        path = Path(spec.calibration).expanduser()
    elif spec.out:
        path = Path(spec.out) / "calibration.json"
    else:
        return
    what = f"calibration file {spec.calibration}" if user else f"calibration file {path}"
    if path.is_dir():
        raise SpecError(f"calibration path {path} is a directory; it must name a JSON file (read and extended)")
    if not path.exists():
        if not user:
            return
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise SpecError(f"{what} cannot be created: {parent} is not a directory")
        if not os.access(parent, os.W_OK):
            raise SpecError(f"{what} cannot be created: {parent} is not writable")
        return
    try:
        problem = _calibration_problem(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"not valid JSON ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if problem is None:
        if not os.access(path, os.W_OK):
            raise SpecError(f"{what} is not writable (new ratios are added to it)")
        return
    if user:
        raise SpecError(f"{what} is not a calibration file: {problem}; move it away to search again")
    from .quarantine import quarantine
    quarantine(path, f"calibration file: {problem}; its ratios will be searched again", root=spec.out)
