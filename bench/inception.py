"""FID / KID of image models with torch-fidelity's InceptionV3 ('inception-v3-compat', pool3 2048-d features).

Samples in [-1, 1] become uint8 (N, 3, H, W) images (grayscale repeated to 3 channels), as torch-fidelity's
extractor expects; it resizes them to 299x299 itself (TF1-compatible bilinear).

The reference is either
- `fid_stats`: a user-given .npz with 'mu' (2048,) and 'sigma' (2048, 2048), like the pytorch-fid / EDM
  reference statistics; FID is computed against those moments, KID is nan (it needs reference features);
- `reference`: a torch-fidelity registered dataset (e.g. 'cifar10-train', downloaded by torch-fidelity /
  torchvision on first use) or a directory of images; its features are cached under `cache_dir`.
`fid_stats` wins when both are given, so nothing is downloaded when local files are given. With
`inception_weights` the extractor loads that local file; without it torch-fidelity downloads its weights once.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from solvers.options import SpecError

from .metrics import KID_SUBSET_SIZE, KID_SUBSETS, FrechetToReference, kid  # KID: 100 subsets of 1000
from .metrics import moments as _moments

EXTRACTOR = "inception-v3-compat"
FEATURE = "2048"

_EXTRACTORS: dict = {}
_REF_FEATURES: dict = {}


class Uint8Images(Dataset):
    """(N, C, H, W) samples in [-1, 1] as uint8 (N, 3, H, W) tensors, one per item (torch-fidelity's input)."""

    def __init__(self, samples: torch.Tensor):
        self.images = to_uint8(samples)

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


def to_uint8(samples: torch.Tensor) -> torch.Tensor:
    x = samples.detach().to("cpu", torch.float64)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise SpecError(f"InceptionV3 metrics need (N, 1 or 3, H, W) images, got samples of shape {tuple(x.shape)}")
    x = torch.nan_to_num(x, nan=0.0)
    x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.contiguous()


def _device(model, samples) -> bool:
    """Run the extractor on CUDA when the model (or the samples) live there."""
    dev = str(model.device)
    return torch.cuda.is_available() and (dev.startswith("cuda") or (samples is not None and samples.is_cuda))


def _weights_tag(path: str | None) -> str:
    if not path:
        return "torch-fidelity-default"
    p = Path(path)
    st = p.stat()
    return hashlib.sha1(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]


def feature_extractor(inception_weights: str | None, cuda: bool):
    """torch-fidelity's InceptionV3 (pool3 features), from a local weights file when one is given."""
    from torch_fidelity.utils import create_feature_extractor

    from .safe_load import describe, patch_torch_fidelity
    patch_torch_fidelity()   # the weights file (or torch-fidelity's download) is loaded weights-only
    if inception_weights and not Path(inception_weights).is_file():
        raise SpecError(f"InceptionV3 weights file not found: {inception_weights}" if not
                        Path(inception_weights).exists() else f"InceptionV3 weights path {inception_weights} is "
                        "not a file")
    key = (_weights_tag(inception_weights), cuda)
    if key not in _EXTRACTORS:
        kwargs = {"verbose": False}
        if inception_weights:
            kwargs["feature_extractor_weights_path"] = str(inception_weights)
        try:
            _EXTRACTORS[key] = create_feature_extractor(EXTRACTOR, [FEATURE], cuda=cuda, **kwargs)
        except SpecError:
            raise
        except Exception as e:
            where = inception_weights or "torch-fidelity's download (pass --inception-weights PATH offline)"
            raise SpecError(f"cannot build the InceptionV3 feature extractor from {where}: {describe(e)}") from None
    return _EXTRACTORS[key]


def features(extractor, images: Dataset, cuda: bool, batch_size: int | None = None) -> torch.Tensor:
    """(N, 2048) float32 pool3 features of a Dataset of uint8 image tensors."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    bs = batch_size or (200 if cuda else 32)
    out = get_featuresdict_from_dataset(images, extractor, bs, cuda, True, False)  # save_cpu_ram: no workers
    return out[FEATURE]


def load_fid_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    from .runfiles import load_npz
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"FID statistics file not found: {path}" if not p.exists() else
                        f"FID statistics path {path} is not a file")
    try:
        z = load_npz(p, ("mu", "sigma"))   # allow_pickle=False; a one-line reason (never numpy's pickle advice)
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read FID statistics file {path} (expected an .npz with arrays mu, sigma): {e}") \
            from None
    if z["mu"].dtype.kind not in "fiu" or z["sigma"].dtype.kind not in "fiu":
        raise SpecError(f"FID statistics in {path} are not numeric arrays (mu {z['mu'].dtype}, "
                        f"sigma {z['sigma'].dtype})")
    mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    d = int(FEATURE)
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise SpecError(f"FID statistics in {path} have mu {mu.shape} and sigma {sigma.shape}; "
                        f"InceptionV3 pool3 needs ({d},) and ({d}, {d})")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise SpecError(f"FID statistics in {path} hold non-finite values")
    return mu, sigma


def moments(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, 2048) features in float64, from chunked sums (bench/metrics.py `moments`)."""
    return _moments(feats)


def frechet(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (bench/metrics.py
    `FrechetToReference`, with (mu2, S2) the reference)."""
    return _frechet_to(mu2, sigma2).distance(mu1, sigma1)


_FRECHET_REFS: dict = {}


def _frechet_to(mu, sigma) -> FrechetToReference:
    """The FrechetToReference of a reference, kept for the last few references seen (its square root is the
    costly part of every FID against it)."""
    key = (id(mu), id(sigma))
    hit = _FRECHET_REFS.get(key)
    if hit is not None and hit[0] is mu and hit[1] is sigma:
        return hit[2]
    ref = FrechetToReference(mu, sigma)
    if len(_FRECHET_REFS) >= 4:
        _FRECHET_REFS.pop(next(iter(_FRECHET_REFS)))
    _FRECHET_REFS[key] = (mu, sigma, ref)
    return ref


def _reference_features(reference: str, extractor, wtag: str, cuda: bool, cache_dir):
    """(features, mu, sigma) of a torch-fidelity registered dataset (or a directory of images); the features
    are cached on disk under cache_dir, all three in memory."""
    from torch_fidelity.registry import DATASETS_REGISTRY
    from torch_fidelity.utils import extract_featuresdict_from_input_id_cached

    from .safe_load import patch_torch_fidelity
    patch_torch_fidelity()   # the features cache under cache_dir is read weights-only; a bad entry is recomputed
    key = (reference, wtag)
    if key in _REF_FEATURES:
        return _REF_FEATURES[key]
    if reference not in DATASETS_REGISTRY and not os.path.isdir(reference):
        raise SpecError(f"unknown FID reference '{reference}': not a torch-fidelity dataset "
                        f"({', '.join(DATASETS_REGISTRY)}) nor a directory of images")
    kwargs = {"input1": reference, "batch_size": 200 if cuda else 32, "cuda": cuda, "save_cpu_ram": True,
              "verbose": False, "cache": cache_dir is not None}
    if cache_dir is not None:
        kwargs["cache_root"] = str(Path(cache_dir) / "inception" / wtag)
    try:
        fd = extract_featuresdict_from_input_id_cached(1, extractor, **kwargs)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"cannot get the FID reference '{reference}' ({msg}); offline, pass --fid-stats "
                        "with precomputed statistics") from None
    f = fd[FEATURE].numpy()
    _REF_FEATURES[key] = (f, *moments(f))
    return _REF_FEATURES[key]


def kid_subsets(f1, f2, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
                device: str = "cpu") -> float:
    """KID: mean over random subsets of the unbiased MMD^2 with kernel (a.b/d + 1)^3 (the torch-fidelity /
    Binkowski et al. estimator, 100 subsets of 1000), subset size capped by the smaller set (bench/metrics.py
    `kid`, the one KID core of nfebench)."""
    return kid(f1, f2, subsets=subsets, subset_size=subset_size, seed=seed, device=device)


def save_fid_stats(reference: str, path, *, inception_weights: str | None = None, cuda: bool | None = None):
    """Write the InceptionV3 moments of a reference (torch-fidelity dataset name or image folder) to an .npz
    with 'mu' and 'sigma', for later offline runs with --fid-stats. Returns the path."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    extractor = feature_extractor(inception_weights or None, cuda)
    _, mu, sigma = _reference_features(reference, extractor, _weights_tag(inception_weights or None), cuda, None)
    np.savez(path, mu=mu, sigma=sigma)
    return path


def sample_features(model, samples: torch.Tensor, inception_weights: str | None = None) -> np.ndarray:
    """(N, 2048) float32 pool3 features of image samples in [-1, 1] (what their FID and KID are taken on)."""
    cuda = _device(model, samples)
    extractor = feature_extractor(inception_weights or None, cuda)
    return features(extractor, Uint8Images(samples), cuda).numpy()


def reference_features(model, *, inception_weights: str | None = None, fid_stats: str | None = None,
                       reference: str | None = None, cache_dir=None) -> np.ndarray | None:
    """(M, 2048) pool3 features of the reference dataset a model's KID is taken against; None when the run
    gives FID statistics (fid_stats: moments only) or the model names no reference."""
    reference = reference or model.fid_reference or None
    if fid_stats or reference is None:
        return None
    inception_weights = inception_weights or None
    cuda = _device(model, torch.empty(0))
    extractor = feature_extractor(inception_weights, cuda)
    return _reference_features(reference, extractor, _weights_tag(inception_weights), cuda, cache_dir)[0]


def inception_metrics(model, samples: torch.Tensor, *, inception_weights: str | None = None,
                      fid_stats: str | None = None, reference: str | None = None, cache_dir=None,
                      kid_subsets_n: int = KID_SUBSETS, feats: np.ndarray | None = None) -> dict:
    """{'fid', 'kid'} of image samples in [-1, 1] under torch-fidelity's InceptionV3.

    fid_stats (an .npz with mu, sigma) takes precedence over `reference` (a torch-fidelity dataset name such as
    'cifar10-train', or a directory of images); KID needs reference features, so it is nan with fid_stats.
    `feats`: the samples' features when already extracted (`sample_features`), else extracted here.
    """
    inception_weights = inception_weights or None
    fid_stats = fid_stats or None
    reference = reference or model.fid_reference or None
    if fid_stats is None and reference is None:
        raise SpecError(f"no FID reference for model '{model.spec}': pass --fid-stats STATS.npz "
                        "(mu, sigma) or a torch-fidelity dataset as the model option reference=NAME")
    if fid_stats is not None:
        mu_ref, sigma_ref = load_fid_stats(fid_stats)  # fail on a bad file before any feature extraction
    cuda = _device(model, samples)
    extractor = feature_extractor(inception_weights, cuda)
    if feats is None:
        feats = features(extractor, Uint8Images(samples), cuda).numpy()
    mu, sigma = moments(feats)
    if fid_stats is not None:
        return {"fid": frechet(mu, sigma, mu_ref, sigma_ref), "kid": math.nan}
    ref, mu_ref, sigma_ref = _reference_features(reference, extractor, _weights_tag(inception_weights), cuda,
                                                 cache_dir)
    return {"fid": frechet(mu, sigma, mu_ref, sigma_ref),
            "kid": kid_subsets(feats, ref, subsets=kid_subsets_n, device="cuda" if cuda else "cpu")}
