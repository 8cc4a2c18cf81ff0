"""FID / KID / conditional accuracy of embedded-model samples through torch-fidelity.

The model names its torch-fidelity feature extractor (`model.feature_extractor`, e.g. 'digits-classifier') and
its registered reference dataset (`model.fid_reference`, e.g. 'digits'); both are registered by
`models.classifier.register_fidelity`. Samples stay in model space (float (N, 1, 8, 8) in [-1, 1]); they are
clipped to [-1, 1] as saving them as images would, and non-finite samples are dropped (never averaged in).
FID and KID come from `torch_fidelity.calculate_metrics` (KID: `kid_subsets` subsets, default 100, of
min(1000, N) samples): torch-fidelity's own formulas (moments of float32 features, the eigenvalues of S1 S2),
not bench/metrics.py's core, which agrees with them to rounding but not bit for bit, so the committed digits
numbers stay torch-fidelity's. The
reference features and FID statistics are cached by torch-fidelity under `cache_dir` (or the user cache dir),
in a folder keyed by the extractor's weights sha256 so that retrained weights never meet stale statistics.
Nothing touches the network.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from solvers.options import SpecError

from .metrics import KID_SUBSET_SIZE, KID_SUBSETS  # torch-fidelity's defaults: 100 subsets of 1000

_EXTRACTORS = ("digits-classifier",)


def _cache_root(cache_dir: Path | None, sha: str) -> Path:
    base = Path(cache_dir) if cache_dir is not None else \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nfebench"
    return base / "fidelity" / f"digits-classifier-{sha[:12]}"


def _calculate(input1, input2, cache_root: Path, kid: bool, n_min: int, kid_subsets: int = KID_SUBSETS) -> dict:
    import torch_fidelity

    from .safe_load import patch_torch_fidelity
    patch_torch_fidelity()   # its cache under cache_root is read weights-only; a bad entry is recomputed
    kwargs = dict(input1=input1, input2=input2, feature_extractor="digits-classifier", fid=True, kid=kid,
                  cuda=False, batch_size=1000, save_cpu_ram=True, verbose=False, cache=True,
                  cache_root=str(cache_root), datasets_root=str(cache_root / "datasets"),
                  datasets_download=False)
    if kid:
        kwargs.update(kid_subsets=kid_subsets, kid_subset_size=min(KID_SUBSET_SIZE, n_min))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch_fidelity.calculate_metrics(**kwargs)
    res = {"fid": float(out["frechet_inception_distance"])}
    if kid:
        res["kid"] = float(out["kernel_inception_distance_mean"])
    return res


def _clean(samples: torch.Tensor, labels):
    x = samples.detach().to("cpu", torch.float32)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise SpecError(f"digits metrics need samples of shape (N, 1, 8, 8), got {tuple(samples.shape)}")
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    x = x[ok].clamp(-1.0, 1.0)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()[ok]
    return x, labels


def fidelity_metrics(model, samples: torch.Tensor, labels: torch.Tensor | None,
                     cache_dir: Path | None = None, kid_subsets: int = KID_SUBSETS) -> dict:
    """{'fid', 'kid', 'cond_acc'} of model-space samples (N, 1, 8, 8) against the model's reference dataset.

    cond_acc is the digits classifier's accuracy on the samples w.r.t. their conditioning labels (nan without
    labels). Non-finite samples are dropped first; with fewer than 2 finite samples every metric is nan.
    """
    from models.classifier import classifier_info, classify, register_fidelity
    from models.digits_data import TensorImages

    name = model.feature_extractor
    if name not in _EXTRACTORS:
        raise SpecError(f"fidelity_metrics handles the feature extractors {', '.join(_EXTRACTORS)}; "
                        f"model '{model.spec}' names '{name}'")
    reference = model.fid_reference or "digits"
    register_fidelity()
    x, y = _clean(samples, labels)
    out = {"fid": math.nan, "kid": math.nan, "cond_acc": math.nan}
    if x.shape[0] >= 2:
        root = _cache_root(cache_dir, classifier_info()["sha256"])
        out.update(_calculate(TensorImages(x), reference, root, kid=True, n_min=x.shape[0], kid_subsets=kid_subsets))
    if y is not None and x.shape[0] > 0:
        out["cond_acc"] = float((classify(x) == y).double().mean())
    return out


def fid_floor(seed: int = 0) -> float:
    """FID between two disjoint random halves of the real digits (seeded): the floor sample FIDs approach."""
    from models.classifier import register_fidelity
    from models.digits_data import TensorImages, load_digits_tensors

    register_fidelity()
    x, _ = load_digits_tensors()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    half = x.shape[0] // 2
    a, b = TensorImages(x[perm[:half]]), TensorImages(x[perm[half:]])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # two Datasets: nothing cacheable; keep torch-fidelity off ~/.cache
        return _calculate(a, b, Path(tmp), kid=False, n_min=half)["fid"]
