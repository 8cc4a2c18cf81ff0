"""Reading files without running code: the one place that says how nfebench (and torch-fidelity on its behalf)
loads a file it may not have written itself.

A pickle runs code when it is loaded, so a planted or swapped file under a run directory or a weights path must
never reach `pickle` or `torch.load(weights_only=False)`. Every cache and weights file is read
- as a torch file by `load_torch_file`: `torch.load(weights_only=True)`, which rebuilds tensors, plain containers
  and numeric numpy arrays (numpy's array-rebuilding globals are allowed for the arrays torch-fidelity caches;
  object arrays are not) and refuses anything else;
- as .npz / .npy with numpy's `allow_pickle=False` (bench/runfiles.py, bench/inception.py);
- as safetensors (the packaged model weights, models/weights_store.py).

torch-fidelity loads its feature/statistics cache and a local InceptionV3 weights file with
`torch.load(weights_only=False)`. `patch_torch_fidelity()` (idempotent; bench/fidelity.py and bench/inception.py
call it before they use torch-fidelity) replaces its two cache loaders with ones that load through
`load_torch_file`, check what they read, and move an unreadable or malformed entry aside (bench/runfiles.py)
and recompute it; and it gives torch-fidelity's modules a `torch` whose `load` always has `weights_only=True`, so
its weights loads (the local file of --inception-weights, and the downloaded one) cannot run code either.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import sys
import types

import numpy as np
import torch

PATCHED_ATTR = "_nfebench_safe_load"


class UnsafeOrCorruptFile(ValueError):
    """A file that cannot be loaded without running code, or is not a complete file of the expected format."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _numpy_globals() -> list:
    """What torch's weights-only unpickler needs to rebuild numeric numpy arrays (never object arrays)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    out = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "UInt8DType",
                 "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            out.append(getattr(dtypes, name))
    return out


def describe(e: BaseException) -> str:
    """One line saying why a torch file did not load (without torch's advice to load it unsafely)."""
    text = str(e)
    if "Weights only load failed" in text or type(e).__name__ == "UnpicklingError":
        m = re.search(r"(Unsupported global: GLOBAL [^\s]+|Unsupported operand \d+|but got <class '[^']+'>)", text)
        what = f" ({m.group(1)})" if m else ""
        return ("it holds pickled objects other than tensors and arrays" + what +
                "; refused, since loading them could run code")
    if (isinstance(e, EOFError) or "zip archive" in text or "central directory" in text
            or (type(e) is OSError and e.errno == errno.EINVAL)):   # a truncated zip: a seek past its end
        return "not a complete torch file (empty, truncated or another format)"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{type(e).__name__}: {first[:200]}"


def load_torch_file(path, map_location="cpu"):
    """torch.load(path, weights_only=True), numeric numpy arrays allowed; UnsafeOrCorruptFile on any failure."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise UnsafeOrCorruptFile(path, describe(e)) from None


# ---- torch-fidelity ----------------------------------------------------------------------------------------

class _WeightsOnlyTorch(types.ModuleType):
    """`torch` for torch-fidelity's modules: the same module, except that load() always has weights_only=True."""

    def __init__(self):
        super().__init__("torch", "torch, with torch.load forced to weights_only=True (bench/safe_load.py)")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(f, *args, **kwargs)


def _check_cache_item(item):
    """Why a torch-fidelity cache entry is unusable (None: usable): features are a finite 2-d float tensor,
    statistics a dict of finite numeric arrays with matching mu (d,) and sigma (d, d)."""
    if isinstance(item, torch.Tensor):
        if item.dim() != 2 or not item.is_floating_point() or not torch.isfinite(item).all():
            return f"a features entry must be a finite 2-d float tensor, got {item.dtype} of shape {tuple(item.shape)}"
        return None
    if isinstance(item, dict) and item:
        for k, v in item.items():
            a = v.numpy() if isinstance(v, torch.Tensor) else v
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu" or not np.isfinite(a).all():
                return f"entry '{k}' is not a finite numeric array"
        if "mu" in item or "sigma" in item:
            mu, sigma = np.asarray(item.get("mu")), np.asarray(item.get("sigma"))
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                return f"statistics mu {mu.shape} and sigma {sigma.shape} do not match"
        return None
    return f"unexpected content ({type(item).__name__})"


def _read_cache_item(path: str):
    """The cached item at path, or None when missing or unusable (then moved aside, to be recomputed)."""
    if not os.path.exists(path):
        return None
    from .quarantine import quarantine
    try:
        item = load_torch_file(path)
        reason = _check_cache_item(item)
    except UnsafeOrCorruptFile as e:
        reason = e.reason
    except FileNotFoundError:   # moved aside meanwhile by another process
        return None
    if reason is None:
        return item
    quarantine(path, f"unusable torch-fidelity cache entry: {reason}; recomputed")
    return None


def _cache_root(kwargs) -> str:
    from torch_fidelity.helpers import get_kwarg
    root = get_kwarg("cache_root", kwargs)
    if root is None:
        root = os.path.join(torch.hub._get_torch_home(), "fidelity_cache")
    os.makedirs(root, exist_ok=True)
    return root


def cache_lookup_one_recompute_on_miss(cached_filename, fn_recompute, **kwargs):
    """torch-fidelity's single-entry cache lookup, loading safely (a bad entry is moved aside and recomputed)."""
    from torch_fidelity.helpers import get_kwarg
    from torch_fidelity.utils import torch_atomic_save
    if not get_kwarg("cache", kwargs):
        return fn_recompute()
    path = os.path.join(_cache_root(kwargs), cached_filename + ".pt")
    item = _read_cache_item(path)
    if item is None:
        item = fn_recompute()
        torch_atomic_save(item, path)
    return item


def cache_lookup_group_recompute_all_on_any_miss(cached_filename_prefix, item_names, fn_recompute, **kwargs):
    """torch-fidelity's group cache lookup (every entry or none), loading safely."""
    from torch_fidelity.helpers import get_kwarg
    from torch_fidelity.utils import torch_atomic_save
    if not get_kwarg("cache", kwargs):
        return fn_recompute()
    root = _cache_root(kwargs)
    paths = {n: os.path.join(root, cached_filename_prefix + n + ".pt") for n in item_names}
    if all(os.path.exists(p) for p in paths.values()):
        out = {n: _read_cache_item(p) for n, p in paths.items()}
        if all(v is not None for v in out.values()):
            return out
    items = fn_recompute()
    for n, p in paths.items():
        torch_atomic_save(items[n], p)
    return items


def patch_torch_fidelity():
    """Make every file load of torch-fidelity weights-only (see the module docstring). Idempotent."""
    import torch_fidelity  # noqa: F401  (imports all its modules)
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    import torch_fidelity.utils as tfu

    if getattr(tfu, PATCHED_ATTR, False):
        return
    swap = {tfu.cache_lookup_one_recompute_on_miss: cache_lookup_one_recompute_on_miss,
            tfu.cache_lookup_group_recompute_all_on_any_miss: cache_lookup_group_recompute_all_on_any_miss}
    safe_torch = _WeightsOnlyTorch()
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "torch_fidelity" or name.startswith("torch_fidelity.")):
            continue
        for attr, value in list(vars(mod).items()):
            if value is torch:
                setattr(mod, attr, safe_torch)
            elif callable(value) and not isinstance(value, type):
                try:
                    if value in swap:
                        setattr(mod, attr, swap[value])
                except TypeError:   # unhashable callables
                    pass
    # the default weights, downloaded once into torch's hub cache: read back weights-only too
    tfi.load_state_dict_from_url = functools.partial(torch.hub.load_state_dict_from_url, weights_only=True)
    setattr(tfu, PATCHED_ATTR, True)
