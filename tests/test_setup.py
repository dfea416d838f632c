"""setup.py's lower bounds are the versions the code needs: each bound is the newest of the versions that introduced
the features the package uses (the tables below, each entry found in the code), read from setup.py without
installing anything."""
import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

ROOT_PATH = Path(ROOT)
# torch features the package and its tools use: (feature, a pattern that finds its use, the first torch with it).
TORCH_FEATURES = [
    ('torch.is_autocast_enabled(device_type)', r'torch\.is_autocast_enabled\(\w', (2, 4)),
    ("torch.onnx.export(..., dynamo=False)", r'torch\.onnx\.export\([^)]*dynamo=False', (2, 5)),
    ('torch.compiler.is_compiling()', r'torch\.compiler\.is_compiling\(\)', (2, 3)),
    ('torch.amp.GradScaler(device)', r'torch\.amp\.GradScaler\(', (2, 3)),
    ('torch.nn.attention.sdpa_kernel', r'from torch\.nn\.attention import [^\n]*sdpa_kernel', (2, 2)),
    ('nn.Module.compile()', r'\b(?:block|downsample|model)\.compile\(', (2, 2)),
    ('torch.utils.flop_counter.FlopCounterMode', r'from torch\.utils\.flop_counter import FlopCounterMode', (2, 1)),
    ('torch.load(..., mmap=True)', r'torch\.load\([^)]*mmap=True', (2, 1)),
]


def package_source() -> str:
    files = sorted((ROOT_PATH / 'mmmetaformer').rglob('*.py')) + sorted((ROOT_PATH / 'tools').glob('*.py'))
    return '\n'.join(path.read_text() for path in files)


def setup_arguments() -> dict:
    """The keyword arguments of setup() in setup.py that are literals (read, not run)."""
    tree = ast.parse((ROOT_PATH / 'setup.py').read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'setup')
    return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords
            if isinstance(keyword.value, (ast.Constant, ast.List))}


def version_tuple(text: str) -> tuple:
    return tuple(int(part) for part in text.split('.'))


@pytest.mark.parametrize('feature, pattern, _', TORCH_FEATURES, ids=[f for f, _, _ in TORCH_FEATURES])
def test_each_listed_torch_feature_is_used(feature, pattern, _):
    assert re.search(pattern, package_source()), f'{feature} is no longer used: take it off TORCH_FEATURES'


def test_torch_lower_bound_is_the_newest_feature():
    requirements = setup_arguments()['install_requires']
    torch_bound, = [re.fullmatch(r'torch>=([\d.]+)', requirement) for requirement in requirements
                    if requirement.startswith('torch')]
    needed = max(TORCH_FEATURES, key=lambda entry: entry[2])
    assert version_tuple(torch_bound[1]) == needed[2], (
        f'setup.py asks for torch>={torch_bound[1]}; the code needs {".".join(map(str, needed[2]))} ({needed[0]})')


def test_python_lower_bound_is_the_version_ruff_checks_the_syntax_for():
    """ruff refuses syntax newer than its target-version (pyproject.toml), so the code parses on that Python."""
    python_bound = re.fullmatch(r'>=3\.(\d+)', setup_arguments()['python_requires'])[1]
    target = re.search(r'^target-version = "py3(\d+)"$', (ROOT_PATH / 'pyproject.toml').read_text(), re.M)[1]
    assert python_bound == target
