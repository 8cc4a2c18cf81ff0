"""What a metric reads of one cell (`CellData`), and the feature spaces the metrics share.

Everything costly is computed on first use and then shared by the metrics of the cell: the samples' features in
the model's FID feature space (once for FID, precision and recall, and the features the run saves for its
FID-change table), the real data's features, the exact ODE solution behind traj_rmse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import finite_mask

REFERENCE_SEED = 12345   # exact reference samples of a data-space model without its own (as KID's)


@dataclass
class CellData:
    """One cell's samples and what metrics may read of them (the `needs` of bench/metric.py's Metric):

    samples: the finite samples (every sample x (N, ...) is on the CPU, diverged ones included; ok marks the
    finite ones, computed when not given); labels: their conditioning labels (y (N,) or None); features() and
    reference_features(): the model's FID feature space; predictions(): the feature classifier's labels of the
    finite samples; reference_solution(): the exact ODE solution from x_T at the end of `grid` (cell: the Cell,
    for its guidance and seed), reference_errors(): each of the first k rows' squared distance from it. spec:
    the RunConfig (default RunConfig()); cache_dir: the run's cache.

    A cell run in shards (bench/shard.py) has no x unless it was kept: `from_shards` builds its CellData from
    the merged per-sample quantities, which the metrics then read as if computed here."""
    model: Any
    x: torch.Tensor | None
    ok: torch.Tensor | None = None
    y: torch.Tensor | None = None
    x_T: torch.Tensor | None = None
    grid: Any = None
    cell: Any = None
    spec: Any = None
    cache_dir: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.ok is None:
            self.ok = finite_mask(self.x)
        self.ok = torch.as_tensor(self.ok)
        if self.spec is None:
            from .spec import RunConfig
            self.spec = RunConfig()

    def _once(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def n_finite(self) -> int:
        return int(self.ok.sum())

    @classmethod
    def from_shards(cls, model, shards, y, grid, cell, spec, cache_dir, samples=None) -> "CellData":
        """The CellData of a cell from its ShardResults (in row order): the metrics read the merged features,
        predictions and reference errors; `samples` (all rows) only when the run kept them."""
        ok = torch.from_numpy(np.concatenate([r.ok for r in shards]))
        data = cls(model, samples, ok, y, None, grid, cell, spec, cache_dir)
        parts = {"features": [r.features for r in shards], "predictions": [r.predictions for r in shards],
                 "reference_errors": [r.ref_sq for r in shards]}
        for name, arrays in parts.items():
            arrays = [a for a in arrays if a is not None]
            if arrays:
                data._cache[name] = np.concatenate(arrays)
        return data

    @property
    def samples(self) -> torch.Tensor:
        """The finite samples: no metric ever averages a diverged one in."""
        if self.x is None:
            raise RuntimeError("this cell's samples were not kept (a metric that needs 'samples' makes the shards "
                               "return them)")
        return self._once("samples", lambda: self.x[self.ok])

    @property
    def labels(self) -> torch.Tensor | None:
        """The finite samples' conditioning labels (None: unconditional)."""
        return None if self.y is None else self._once("labels", lambda: self.y[self.ok])

    def features(self) -> np.ndarray | None:
        """(finite samples, D) features in the model's FID feature space (None: the model has none here)."""
        return self._once("features", lambda: sample_features(self.model, self.samples, self.spec))

    def predictions(self) -> np.ndarray | None:
        """(finite samples,) the feature classifier's labels (None: the model's features have no classifier, or
        a sharded cell did not compute them)."""
        if self.x is None and "predictions" not in self._cache:
            return None
        return self._once("predictions", lambda: feature_pass(self.model, self.samples, self.spec, True)[1])

    def reference_errors(self) -> np.ndarray:
        """(k,) each of the first k = spec.reference_samples (0: all) rows' squared distance (summed over the
        coordinates) from the exact ODE solution; nan or inf for a diverged row."""
        def errors():
            ref = self.reference_solution()
            x = self.x[:ref.shape[0]].to(torch.float64)
            return ((x - ref) ** 2).reshape(ref.shape[0], -1).sum(1).numpy()
        return self._once("reference_errors", errors)

    def reference_features(self) -> np.ndarray | None:
        """(M, D) features of the real data in the same space (None: not available, e.g. FID statistics only).
        A data-space model without reference samples of its own gives as many exact samples as the cell has
        finite ones (fixed seed)."""
        return self._once("reference_features", lambda: reference_features(
            self.model, self.spec, self.cache_dir, self.n_finite))

    def reference_solution(self) -> torch.Tensor:
        """The exact ODE solution (dopri5) from the first k = spec.reference_samples (0: all) rows of x_T."""
        def solve():
            from .reference import reference_solution
            spec, cell, y = self.spec, self.cell, self.y
            k = min(spec.reference_samples or self.x.shape[0], self.x.shape[0])
            return reference_solution(self.model, self.x_T[:k], None if y is None else y[:k], cell.guidance,
                                      self.grid[-1], spec.reference_rtol, self.cache_dir,
                                      f"{cell.model}|{cell.seed}|{spec.dtype}", spec.batch_size)
        return self._once("reference_solution", solve)


def feature_pass(model, x: torch.Tensor, spec, predictions: bool = False):
    """(features, predictions) of finite model-space samples x: their FID features (`sample_features`) and, for
    a classifier's feature space, the classifier's labels from the same pass (cond_acc); either may be None."""
    from models.classifier import CLASSIFIERS, FEATURE
    kind = model.feature_extractor
    if x.shape[0] == 0:   # every sample of the batch diverged
        dim = {"data": math.prod(model.shape), "inception-v3-compat": 2048,
               **{name: int(FEATURE) for name in CLASSIFIERS}}.get(kind)
        return (None if dim is None else np.zeros((0, dim), np.float32),
                np.zeros(0, np.int64) if predictions and kind in CLASSIFIERS else None)
    f = sample_features(model, x, spec)
    if kind in CLASSIFIERS and predictions:   # the classifier's last layer
        from models.classifier import load_classifier
        with torch.no_grad():
            return f, load_classifier(name=kind).fc2(torch.from_numpy(f)).argmax(1).numpy()
    return f, None


def sample_features(model, x: torch.Tensor, spec) -> np.ndarray | None:
    """Features of finite model-space samples in the model's FID feature space: the data itself (gmm2d), an
    image classifier's (digits, mnist-unet), InceptionV3's pool3 (hub image models); None for another extractor."""
    from models.classifier import CLASSIFIERS
    kind = model.feature_extractor
    if kind == "data" or kind in CLASSIFIERS:
        from .nfe_changes import cell_features
        return cell_features(model, x)
    if kind == "inception-v3-compat":
        from .inception import sample_features as inception_features
        return inception_features(model, x, spec.inception_weights or None)
    return None


_REFERENCE_FEATURES: dict = {}


def reference_features(model, spec, cache_dir=None, n: int = 0) -> np.ndarray | None:
    """Features of the real data a model's FID is taken against, in its FID feature space: a data-space model's
    reference samples (or `n` exact ones, fixed seed), a classifier's features of its data set (the 1,797 digits,
    the 5,000 MNIST images), an image reference's InceptionV3 features (None with FID statistics only, or
    without a reference)."""
    from models.classifier import CLASSIFIERS
    kind = model.feature_extractor
    if kind == "data":
        ref = model.reference
        if ref.samples is not None:
            return ref.samples.reshape(ref.samples.shape[0], -1).to(torch.float64).numpy()
        key = (model.spec, int(n))
        if key not in _REFERENCE_FEATURES:
            if len(_REFERENCE_FEATURES) >= 4:
                _REFERENCE_FEATURES.pop(next(iter(_REFERENCE_FEATURES)))
            s = ref.sample(int(n), torch.Generator().manual_seed(REFERENCE_SEED))
            _REFERENCE_FEATURES[key] = s.reshape(s.shape[0], -1).to(torch.float64).numpy()
        return _REFERENCE_FEATURES[key]
    if kind in CLASSIFIERS:
        from .nfe_changes import reference_features as classifier_features
        key = (kind, model.fid_reference)
        if key not in _REFERENCE_FEATURES:
            _REFERENCE_FEATURES[key] = classifier_features(model)
        return _REFERENCE_FEATURES[key]
    if kind == "inception-v3-compat":
        from .inception import reference_features as inception_reference
        return inception_reference(model, inception_weights=spec.inception_weights or None,
                                   fid_stats=spec.fid_stats or None, cache_dir=cache_dir)
    return None
