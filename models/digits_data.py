"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, values 0..16, 10 classes) in model space.

Model space: x = pixel / 8 - 1 in [-1, 1], per-sample shape (1, 8, 8), float32 (float64 on request).
The data ships with scikit-learn, so nothing is downloaded. `DigitsDataset` is the torch-fidelity input
(registered as the dataset 'digits' by `models.classifier.register_fidelity`).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
DATASET_NAME = "digits"


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float64), d.target.astype(np.int64)


def to_model_space(pixels) -> torch.Tensor:
    """Pixel values 0..16 -> [-1, 1]."""
    return torch.as_tensor(pixels, dtype=torch.float64) / 8.0 - 1.0


def load_digits_tensors(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as (N, 1, 8, 8) in [-1, 1] and their labels (N,) long, in scikit-learn's order."""
    images, target = _raw()
    x = to_model_space(images).reshape(-1, *SHAPE).to(dtype)
    return x, torch.as_tensor(target, dtype=torch.long)


def train_test_split(seed: int = 0, test_frac: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified index split (train_idx, test_idx), deterministic given the seed."""
    _, y = load_digits_tensors()
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(test_frac * idx.numel()))
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


class TensorImages(Dataset):
    """A Dataset over (N, 1, 8, 8) model-space images, one float32 tensor per item (torch-fidelity input)."""

    def __init__(self, images: torch.Tensor):
        self.images = images.detach().to("cpu", torch.float32).contiguous()

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


class DigitsDataset(TensorImages):
    """All digits images in model space (torch-fidelity's registered dataset 'digits')."""

    def __init__(self, root=None, download=False):  # torch-fidelity passes (root, download); nothing to fetch
        super().__init__(load_digits_tensors()[0])
