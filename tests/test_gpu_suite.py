"""The GPU suite (tests/gpu) on a machine without a GPU: every module imports (names included), every test is
collected, marked ``cuda`` and skipped when it runs, never left out at collection."""
import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import GPU_TESTS, ROOT

GPU_MODULES = sorted(Path(GPU_TESTS).glob('test_*.py'))


@pytest.mark.parametrize('path', GPU_MODULES, ids=lambda path: path.name)
def test_every_import_of_the_gpu_suite_resolves(path):
    """Imports inside test functions too: collection alone would not reach those."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f'{path.name}: relative import'
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f'{node.module}.{alias.name}'), (
                    f'{path.name}: {node.module} has no {alias.name}')


@pytest.mark.skipif(torch.cuda.is_available(), reason='with a GPU the suite runs (tools/gpu_check.sh)')
def test_gpu_suite_is_collected_and_skips_without_cuda():
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider', 'tests/gpu'],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r'\d+ skipped(, \d+ warnings?)? in [\d.]+s( \(\S+\))?', summary), output
    skipped = re.findall(r'^SKIPPED \[\d+\] (tests/gpu/test_\w+\.py)(?::\d+)?: (.+)$', result.stdout, re.M)
    assert {file for file, _ in skipped} == {f'tests/gpu/{path.name}' for path in GPU_MODULES}, output
    assert all('CUDA' in reason for _, reason in skipped), output  # no GPU, or no CUDA onnxruntime
