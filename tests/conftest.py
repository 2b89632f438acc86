"""Shared fixtures: paths to the real datasets and small real-image batches."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The datasets live beside the repository checkout, never inside it.
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CIFAR10 = DATASETS / "cifar10"
CIFAR100 = DATASETS / "cifar100"


@pytest.fixture(scope="session")
def cifar10_dir():
    if not (CIFAR10 / "train").is_dir():
        pytest.skip(f"CIFAR-10 image folders not found at {CIFAR10}")
    return CIFAR10


@pytest.fixture(scope="session")
def cifar100_dir():
    if not (CIFAR100 / "train.npz").is_file():
        pytest.skip(f"CIFAR-100 arrays not found at {CIFAR100}")
    return CIFAR100


@pytest.fixture(scope="session")
def digits_images():
    """Real 8x8 digits from scikit-learn, upsampled to 16x16 RGB in [0, 1]."""
    from keras_shiftadd import data

    dataset = data.load_digits(seed=0)
    x = dataset.x_test[:12].astype("float32") / 255.0
    x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    return np.repeat(x, 3, axis=-1)
