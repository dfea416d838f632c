import os
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

GPU_TESTS = os.path.join(TESTS, 'gpu')
torch.set_num_threads(min(2, torch.get_num_threads()))
# The suite does not time the fast paths' forms: which form runs must not depend on the machine's load. The tests
# of tests/test_models/test_fast_paths.py force each form, and test the timing with a fake clock.
os.environ.setdefault('MMMETAFORMER_FAST_PATH_MEASURE', '0')


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config, items):
    """The GPU suite (tests/gpu/, run with ``-m cuda``): marked ``cuda``, skipped (not failed) without CUDA."""
    skip = pytest.mark.skip(reason='needs a CUDA GPU (torch.cuda.is_available() is False)')
    for item in items:
        if str(item.fspath).startswith(GPU_TESTS + os.sep):
            item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture
def tmp_ckpt(tmp_path):
    """Save a state dict (or any checkpoint content) to a file and return its path."""
    def save(content, name='ckpt.pth'):
        path = tmp_path / name
        torch.save(content, path)
        return str(path)
    return save


@pytest.fixture(scope='module')
def module_tmp_factory(tmp_path_factory):
    """``tmp_path_factory`` for module-scoped fixtures, whose folders go when the module's tests end.

    The module fixtures train and convert published-size models: left to the end of the session, as pytest leaves
    ``tmp_path_factory`` folders, their checkpoints add up to tens of gigabytes over the suite.
    """
    made = []

    def mktemp(name: str):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield SimpleNamespace(mktemp=mktemp)
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def seeded_random_numbers():
    """Each test draws the same random numbers in every run, whichever tests ran before it: an unseeded mmengine
    runner built by an earlier test (``set_random_seed(None)``) seeds the generators from the system's entropy."""
    import random

    import numpy as np
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def fresh_default_scope():
    """Each test starts without mmengine's process-wide default scope, as a new process does: tests that build mm
    models set one, and mmpretrain's inferencer looks its transforms up in whatever scope is current."""
    yield
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()

