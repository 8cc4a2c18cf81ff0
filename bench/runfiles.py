"""Checking the files a run reads back from its run directory, and moving bad ones aside.

Every file a run reads back (cell JSON, samples, saved FID features and reference moments, cached reference
solutions, torch-fidelity's cache, run.json) is checked here for format, type and shape before it is used.
A bad file never stops or poisons a run: it is reported in one line naming it, MOVED (never deleted) to
RUN/quarantine/<time>/<its path in the run>, with its reason appended to RUN/quarantine/reasons.log, and
treated as missing, so that what it held is computed again (a cell reruns; a cache is recomputed).

Cell files are checked for the keys every row needs (model, solver, nfe, nfe_used, guidance, seed, n_samples,
with their types) and for metric values that are numbers, null, "inf" or "-inf"; other keys are free.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .quarantine import quarantine
from .safe_load import UnsafeOrCorruptFile, load_torch_file
METRIC_KEYS = ("fid", "kid", "traj_rmse", "cond_acc", "diverged_frac", "wall_s", "samples_per_s")


# ---- cells ---------------------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_cell(row) -> str | None:
    """Why a parsed cell file is not a usable results row (None: it is)."""
    if not isinstance(row, dict):
        return f"a cell file must hold a JSON object, it holds a {type(row).__name__}"
    need = {"model": str, "solver": str, "nfe": int, "nfe_used": int, "guidance": float, "seed": int,
            "n_samples": int}
    missing = [k for k in need if k not in row]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for k in ("model", "solver"):
        if not isinstance(row[k], str) or not row[k]:
            return f"'{k}' must be a non-empty string, got {row[k]!r}"
    for k, low in (("nfe", 1), ("nfe_used", 0), ("seed", None), ("n_samples", 1)):
        if not _is_int(row[k]) or (low is not None and row[k] < low):
            return f"'{k}' must be an integer{f' >= {low}' if low is not None else ''}, got {row[k]!r}"
    g = row["guidance"]
    if not _is_number(g) or not math.isfinite(g) or g <= 0:
        return f"'guidance' must be a positive number, got {g!r}"
    for k in METRIC_KEYS:
        v = row.get(k)
        if v is None or _is_number(v) or v in ("inf", "-inf"):
            continue
        return f"metric '{k}' must be a number, null or \"inf\", got {v!r}"
    return None


def read_cell(path: Path, root=None) -> dict | None:
    """The row of a cell file; None when it is missing, or bad (then moved aside: the cell is to be rerun)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        quarantine(path, f"unreadable cell file ({type(e).__name__}); the cell will be rerun", root)
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"not valid JSON ({e})"
        quarantine(path, f"cell file is {what}; the cell will be rerun", root)
        return None
    reason = check_cell(row)
    if reason is not None:
        quarantine(path, f"cell file is not a results row: {reason}; the cell will be rerun", root)
        return None
    return row


def read_json_object(path: Path, what: str, root=None) -> dict | None:
    """A JSON object file of the run (run.json); None when missing or bad (then moved aside)."""
    try:
        text = Path(path).read_text()
        data = json.loads(text)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        quarantine(path, f"{what} is unreadable or not valid JSON ({type(e).__name__}); written again", root)
        return None
    if not isinstance(data, dict):
        quarantine(path, f"{what} must hold a JSON object, it holds a {type(data).__name__}; written again", root)
        return None
    return data


# ---- tensors and arrays --------------------------------------------------------------------------------------

_MISSING = object()


def _load_torch(path: Path, what: str, then: str, root):
    """The file's weights-only content; _MISSING when it is absent or bad (a bad one is moved aside)."""
    if not path.is_file():
        return _MISSING
    try:
        return load_torch_file(path)
    except UnsafeOrCorruptFile as e:
        quarantine(path, f"{what}: {e.reason}; {then}", root)
    except FileNotFoundError:
        pass
    return _MISSING


def read_samples(path: Path, root=None) -> dict | None:
    """A cell's saved samples {'x': (n, ...) float tensor, 'y': None or (n,) integer tensor}; None when missing or
    bad (moved aside: the plots leave that cell blank)."""
    path = Path(path)
    smp = _load_torch(path, "saved samples", "the sample plots leave the cell out", root)
    if smp is _MISSING:
        return None
    x = smp.get("x") if isinstance(smp, dict) else None
    y = smp.get("y") if isinstance(smp, dict) else None
    reason = None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        reason = "'x' must be a float tensor of samples"
    elif y is not None and (not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]
                            or y.is_floating_point()):
        reason = "'y' must be None or one integer label per sample"
    if reason is not None:
        quarantine(path, f"saved samples: {reason}; the sample plots leave the cell out", root)
        return None
    return smp


def read_tensor(path: Path, shape: tuple, dtype: torch.dtype, what: str, root=None) -> torch.Tensor | None:
    """A cached tensor of exactly this shape and dtype; None when missing or bad (moved aside: recomputed)."""
    path = Path(path)
    x = _load_torch(path, what, "recomputed", root)
    if x is _MISSING:
        return None
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape) or x.dtype != dtype:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        quarantine(path, f"{what}: expected a {dtype} tensor of shape {tuple(shape)}, got {got}; recomputed", root)
        return None
    return x


def _npz_reason(e: BaseException) -> str:
    text = str(e)
    if "allow_pickle" in text or "pickled" in text:
        return "it holds pickled objects, not plain arrays"
    if type(e).__name__ in ("BadZipFile", "EOFError") or "zip" in text.lower():
        return "not a complete .npz archive (empty, truncated or another format)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first[:200]}"


def load_npz(path: Path, keys: tuple | None) -> dict:
    """The named arrays (None: all) of an .npz (allow_pickle=False); ValueError with a one-line reason otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            keys = tuple(z.files) if keys is None else keys
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise KeyError(f"missing array(s) {', '.join(missing)} (it has: {', '.join(z.files) or 'none'})")
            return {k: np.asarray(z[k]) for k in keys}
    except FileNotFoundError:
        raise
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    except Exception as e:
        raise ValueError(_npz_reason(e)) from None


def read_reference_moments(path: Path, root=None) -> tuple[np.ndarray, np.ndarray] | None:
    """(mu (d,), cov (d, d)) of features/reference-<model>.npz; None when missing or bad (moved aside)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        z = load_npz(path, ("mu", "cov"))
        mu, cov = z["mu"], z["cov"]
        if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"mu {mu.shape} and cov {cov.shape} do not match")
        if mu.dtype.kind != "f" or cov.dtype.kind != "f" or not (np.isfinite(mu).all() and np.isfinite(cov).all()):
            raise ValueError("mu and cov must be finite float arrays")
    except FileNotFoundError:
        return None
    except ValueError as e:
        quarantine(path, f"reference moments: {e}; recomputed from the model", root)
        return None
    return mu, cov


def read_cell_features(path: Path, n_samples: int | None = None, dim: int | None = None,
                       root=None) -> tuple[np.ndarray, np.ndarray] | None:
    """(index (m,), features (m, d)) of features/<cell key>.npz; None when missing or bad (moved aside)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        z = load_npz(path, ("index", "f"))
        index, f = z["index"], z["f"]
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(f"'index' must be a 1-d integer array, got {index.dtype} {index.shape}")
        if f.ndim != 2 or f.shape[0] != index.shape[0] or f.dtype.kind != "f":
            raise ValueError(f"'f' must be a float array with one row per index, got {f.dtype} {f.shape} for "
                             f"{index.shape[0]} indices")
        if dim is not None and f.shape[1] != dim:
            raise ValueError(f"features have {f.shape[1]} dimensions, the reference moments {dim}")
        if len(index) and (index.min() < 0 or (n_samples is not None and index.max() >= n_samples)
                           or (np.diff(index) <= 0).any()):
            raise ValueError(f"'index' must be increasing sample indices below {n_samples}")
        if not np.isfinite(f).all():
            raise ValueError("features are not finite")
    except FileNotFoundError:
        return None
    except ValueError as e:
        quarantine(path, f"saved FID features: {e}; the cell is left out of the FID-change table", root)
        return None
    return index, f
