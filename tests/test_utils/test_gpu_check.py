"""``tools/gpu_check.sh`` on a machine without a GPU: it parses its options, writes its log and says why it stops."""
import os
import re
import shutil
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


def test_gpu_check_help_shows_its_usage(tmp_path):
    result = gpu_check('--help')
    assert result.returncode == 0
    usage = result.stdout.splitlines()
    assert usage[0].startswith('# The GPU checks in one command') and len(usage) == 11
    assert any('--wheels DIR' in line for line in usage) and any('--log FILE --quick' in line for line in usage)


def write_wheel(folder, name: str, version: str) -> str:
    """A minimal wheel of distribution ``name`` with one module, ``name.py``."""
    import zipfile
    path = os.path.join(folder, f'{name}-{version}-py3-none-any.whl')
    info = f'{name}-{version}.dist-info'
    files = {f'{name}.py': 'VALUE = 1\n',
             f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{info}/RECORD'] = ''.join(f'{file},,\n' for file in files) + f'{info}/RECORD,,\n'
    with zipfile.ZipFile(path, 'w') as wheel:
        for file, text in files.items():
            wheel.writestr(file, text)
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason='with a GPU the script runs the GPU suite (tests/gpu)')
def test_gpu_check_installs_the_given_wheels_then_stops_without_cuda(tmp_path):
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    write_wheel(str(wheels), 'gpu_check_probe', '0.1')
    log = tmp_path / 'quick.log'
    result = gpu_check('--wheels', str(wheels), '--log', str(log), '--quick')
    assert result.returncode == 1
    text = log.read_text()
    site, = re.findall(rf'^\[gpu_check\] installing the wheels of {re.escape(str(wheels))} into (\S+) \(no package '
                       r'index\)$', text, re.M)
    try:
        assert os.path.isfile(os.path.join(site, 'gpu_check_probe.py'))
        assert os.path.isdir(os.path.join(site, 'gpu_check_probe-0.1.dist-info'))
    finally:
        shutil.rmtree(site, ignore_errors=True)
    assert text.rstrip().endswith(f'torch {torch.__version__} sees no CUDA GPU; nothing to check here')
