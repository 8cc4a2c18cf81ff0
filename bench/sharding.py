"""How a cell splits into shards and what a shard returns (bench/shard.py runs them, bench/driver.py merges them).

A cell of N samples splits into shards [start, stop) whose bounds are multiples of the batch size, so that every
sample is computed in the same batch whatever the number of shards. A shard returns a `ShardResult`: plain
arrays of what the run's metrics need of its rows (`what_to_keep`), never the samples unless asked.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .metric_families import needing

DEFAULT_SHARD_BATCHES = 8   # a shard holds this many batches unless the run says otherwise
SAVED_SAMPLES = 512         # kept per cell for sample plots


def shard_ranges(n_samples: int, batch_size: int, shard_samples: int = 0) -> list[tuple[int, int]]:
    """The [start, stop) ranges a cell of n_samples splits into: `shard_samples` each (a multiple of the batch
    size; 0: DEFAULT_SHARD_BATCHES batches), the last one shorter."""
    bs = batch_size if 0 < batch_size < n_samples else n_samples
    size = shard_samples or DEFAULT_SHARD_BATCHES * bs
    size = max(bs, (size // bs) * bs)
    return [(i, min(i + size, n_samples)) for i in range(0, n_samples, size)]


@dataclass
class ShardResult:
    """What a shard returns (plain arrays, saved by the driver as .npz, never pickled on disk).

    ok: (n,) finite mask of rows start..stop-1; features: (finite rows, D) FID features, predictions: (finite
    rows,) the classifier's labels (None when not computed); ref_sq: (rows below k,) each row's squared distance
    from the exact solution (nan for a diverged row; None without traj_rmse); preview: the rows below
    SAVED_SAMPLES; samples: every row (None unless asked)."""
    start: int
    stop: int
    nfe_used: int
    wall_s: float
    ok: np.ndarray
    features: np.ndarray | None = None
    predictions: np.ndarray | None = None
    ref_sq: np.ndarray | None = None
    preview: np.ndarray | None = None
    samples: np.ndarray | None = None
    metrics: dict | None = None   # the cell's metrics, when the shard is the whole cell (scored where it ran)

    ARRAYS = ("ok", "features", "predictions", "ref_sq", "preview", "samples")

    def arrays(self) -> dict:
        """The per-row arrays by name (None: not computed)."""
        return {"ok": self.ok, "features": self.features, "predictions": self.predictions, "ref_sq": self.ref_sq,
                "preview": self.preview, "samples": self.samples}

    def to_arrays(self) -> dict:
        out = {"range": np.array([self.start, self.stop, self.nfe_used], np.int64),
               "wall_s": np.array(self.wall_s, np.float64)}
        out.update({k: v for k, v in self.arrays().items() if v is not None})
        if self.metrics is not None:
            out["metrics"] = np.array(json.dumps(self.metrics))   # text, never a pickled object
        return out

    @classmethod
    def from_arrays(cls, arrays, start: int, stop: int) -> "ShardResult":
        """Rebuild a saved shard, checking it is the shard [start, stop) (ValueError otherwise)."""
        try:
            rng = np.asarray(arrays["range"])
            ok = np.asarray(arrays["ok"])
            wall = float(arrays["wall_s"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a shard result ({type(e).__name__}: {e})") from None
        if rng.shape != (3,) or int(rng[0]) != start or int(rng[1]) != stop:
            raise ValueError(f"holds rows {rng.tolist()[:2]}, expected [{start}, {stop})")
        if ok.dtype != np.bool_ or ok.shape != (stop - start,):
            raise ValueError("its finite mask does not match its rows")
        r = cls(start, stop, int(rng[2]), wall, ok,
                **{k: np.asarray(arrays[k]) for k in cls.ARRAYS[1:] if k in arrays})
        if "metrics" in arrays:
            try:
                metrics = json.loads(str(np.asarray(arrays["metrics"])))
                if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) or v is None
                                                            for v in metrics.values()):
                    raise ValueError
            except ValueError:
                raise ValueError("its metrics are not a JSON object of numbers") from None
            r.metrics = {k: (math.nan if v is None else float(v)) for k, v in metrics.items()}
        n_ok = int(ok.sum())
        for name, a in (("features", r.features), ("predictions", r.predictions)):
            if a is not None and a.shape[0] != n_ok:
                raise ValueError(f"its {name} have {a.shape[0]} rows for {n_ok} finite samples")
        return r


def what_to_keep(spec) -> dict:
    """Which per-sample quantities the run's metrics need from a shard."""
    wanted = list(spec.metrics)
    return {"features": needing(wanted, "features") or "cond_acc" in wanted,
            "reference": needing(wanted, "reference_solution"),
            "samples": spec.save_samples or needing(wanted, "samples"),
            "predictions": needing(wanted, "features") or "cond_acc" in wanted}   # one more layer: cond_acc
