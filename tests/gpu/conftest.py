"""The GPU suite: every test here is marked ``cuda`` and skipped (not failed) where CUDA is absent.

Run it with ``bash tools/test.sh -m cuda`` (or ``bash tools/gpu_check.sh``, which also runs the GPU benchmark rows).
"""
import os

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason='needs a CUDA GPU (torch.cuda.is_available() is False)')
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(skip)
