"""``tools/gpu_check.sh`` on a machine without a GPU: it parses its options, writes its log and says why it stops."""
import os
import subprocess

import pytest
import torch

from conftest import ROOT


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', 'tools/gpu_check.sh', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason='with a GPU the script runs the GPU suite (tests/gpu)')
def test_gpu_check_says_what_it_found_and_stops_without_cuda(tmp_path):
    log = tmp_path / 'gpu_check.log'
    result = gpu_check('--log', str(log))
    assert result.returncode == 1
    text = log.read_text()
    assert f'torch {torch.__version__} sees no CUDA GPU; nothing to check here' in text
    assert text.startswith('[gpu_check] ') and 'UTC' in text.splitlines()[0]


def test_gpu_check_refuses_unknown_options_and_missing_wheel_folders(tmp_path):
    result = gpu_check('--log', str(tmp_path / 'a.log'), '--fast')
    assert result.returncode == 2 and 'unknown argument --fast' in result.stderr
    result = gpu_check('--log', str(tmp_path / 'b.log'), '--wheels', str(tmp_path / 'absent'))
    assert result.returncode == 2 and 'is not a folder' in result.stdout
    assert os.path.isfile(tmp_path / 'b.log')
