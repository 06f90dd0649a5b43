from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_encoded_dataset  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(data_dir, truth) of a small encoded dataset with planted pairs."""
    d = tmp_path_factory.mktemp("tiny")
    truth = make_encoded_dataset(d)
    return d, truth
