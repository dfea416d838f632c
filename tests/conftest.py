import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tmp_ckpt(tmp_path):
    """Save a state dict (or any checkpoint content) to a file and return its path."""
    def save(content, name='ckpt.pth'):
        path = tmp_path / name
        torch.save(content, path)
        return str(path)
    return save
