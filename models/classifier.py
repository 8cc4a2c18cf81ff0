"""The digits classifier and its torch-fidelity feature extractor 'digits-classifier'.

A small CNN trained on a stratified 80 % split of scikit-learn's digits (held-out accuracy in the weights'
metadata). It takes model-space float images (N, 1, 8, 8) in [-1, 1]. Features for FID/KID are the
128-d penultimate layer (post-ReLU), named '128'; 'logits_unbiased' (logits without the bias) and 'logits'
are provided too, as torch-fidelity's InceptionV3 does.

`register_fidelity()` registers the extractor and the dataset 'digits' (all 1,797 images) with
torch-fidelity; it is idempotent and imports torch-fidelity only when called.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from .digits_data import DATASET_NAME, NUM_CLASSES, DigitsDataset
from .weights_store import load_weights, sha256_of, weights_path

WEIGHTS_NAME = "digits-classifier"
EXTRACTOR_NAME = "digits-classifier"
FEATURE = "128"
FEATURES = (FEATURE, "logits_unbiased", "logits")


class DigitsClassifier(nn.Module):
    def __init__(self, width: int = 32, feat: int = int(FEATURE)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.fc1 = nn.Linear(4 * width * 2 * 2, feat)
        self.fc2 = nn.Linear(feat, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)   # 4x4
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)   # 2x2
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


@functools.lru_cache(maxsize=4)
def _load(directory: str | None, sha: str) -> tuple[DigitsClassifier, dict]:
    state, meta = load_weights(WEIGHTS_NAME, directory)
    net = DigitsClassifier()
    net.load_state_dict(state)
    net.requires_grad_(False).eval()
    return net, meta


def load_classifier(directory: str | None = None) -> DigitsClassifier:
    """The shipped classifier (sha256-checked; cached per file content). Returns a shared eval-mode module."""
    path = weights_path(WEIGHTS_NAME, directory)
    sha = sha256_of(path) if path.is_file() else ""
    return _load(None if directory is None else str(directory), sha)[0]


def classifier_info(directory: str | None = None) -> dict:
    """The classifier weights' metadata (held-out accuracy, split seed, ...) and the file's sha256."""
    path = weights_path(WEIGHTS_NAME, directory)
    sha = sha256_of(path) if path.is_file() else ""
    meta = dict(_load(None if directory is None else str(directory), sha)[1])
    meta["sha256"] = sha
    return meta


@torch.no_grad()
def classify(x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of model-space images (N, 1, 8, 8)."""
    net = load_classifier()
    x = x.detach().to("cpu", torch.float32).reshape(-1, 1, 8, 8)
    return torch.cat([net(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]) \
        if x.shape[0] else torch.zeros(0, dtype=torch.long)


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert

    class FeatureExtractorDigits(FeatureExtractorBase):
        """torch-fidelity feature extractor over model-space float images (N, 1, 8, 8) in [-1, 1].

        Features: '128' (penultimate layer, post-ReLU; default for FID, KID and PRC), 'logits_unbiased'
        (default for ISC), 'logits'. uint8 input (N, 1 or 3, 8, 8) is accepted too and mapped to [-1, 1].
        """

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = DigitsClassifier()
            self.net.load_state_dict(load_classifier().state_dict())
            self.requires_grad_(False)
            self.eval()

        def forward(self, x):
            vassert(torch.is_tensor(x) and x.dim() == 4 and x.shape[-2:] == (8, 8),
                    f"digits-classifier expects (N, 1, 8, 8) images, got {tuple(getattr(x, 'shape', ()))}")
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
            return torch.zeros(1, 1, 8, 8)

    return FeatureExtractorDigits


def register_fidelity() -> None:
    """Register the 'digits-classifier' extractor and the 'digits' dataset with torch-fidelity (idempotent)."""
    from torch_fidelity.registry import (DATASETS_REGISTRY, FEATURE_EXTRACTORS_REGISTRY, register_dataset,
                                         register_feature_extractor)

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, _extractor_class())
    if DATASET_NAME not in DATASETS_REGISTRY:
        register_dataset(DATASET_NAME, DigitsDataset)
