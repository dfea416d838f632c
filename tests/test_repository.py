"""Guardrails of the repository: lint and import order, one source of the pinned versions, the license."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmmetaformer.utils import stack
from conftest import ROOT


def ruff_command() -> list:
    """ruff of this environment (installed with the pinned stack), as a module or on PATH."""
    try:
        import ruff  # noqa: F401
        return [sys.executable, '-m', 'ruff']
    except ImportError:
        found = shutil.which('ruff')
        if found is None:
            pytest.fail(f'ruff is not installed: run `bash tools/install.sh` (it pins ruff=={stack.PINS["ruff"][0]})')
        return [found]


def test_ruff_finds_nothing():
    """pyproject.toml's lint rules (pycodestyle, pyflakes, import order; 120 columns) over the whole repository."""
    result = subprocess.run(ruff_command() + ['check', '--no-cache', '.'], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def readme_setup_section() -> str:
    text = (Path(ROOT) / 'README.md').read_text()
    match = re.search(r'^## Set up\n(.*?)(?=^## )', text, re.S | re.M)
    assert match, 'README.md has no "## Set up" section'
    return ' '.join(match.group(1).split())  # lines joined: a name and its version may be split over two lines


@pytest.mark.parametrize('name', sorted(stack.PINS))
def test_readme_setup_names_each_pinned_version(name):
    assert f'{name} {stack.PINS[name][0]}' in readme_setup_section()


def test_install_script_takes_every_version_from_the_one_source():
    script = (Path(ROOT) / 'tools' / 'install.sh').read_text()
    versions = {version for version, _ in stack.PINS.values()}
    assert [line for line in script.splitlines() if any(version in line for version in versions)] == []
    assert 'mmmetaformer/utils/stack.py' in script


def test_pins_print_as_pip_requirements_in_install_order():
    printed = [subprocess.run([sys.executable, 'mmmetaformer/utils/stack.py', 'requirements', group], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.split() for group in stack.GROUPS]
    assert printed[0] == ['torch==2.13.0', 'torchvision==0.28.0'] and printed[1] == ['onedl-mmcv==2.3.6']
    assert sorted(line.split('==')[0] for group in printed for line in group) == sorted([*stack.PINS,
                                                                                        *stack.UNPINNED])


def test_import_time_check_requires_the_pinned_versions():
    assert stack.REQUIREMENTS['mmcv'] == ('onedl-mmcv', stack.PINS['onedl-mmcv'][0])
    assert {dist for dist, _ in stack.REQUIREMENTS.values()} <= set(stack.PINS)


def test_license_is_apache_and_credits_the_official_code():
    license_text = (Path(ROOT) / 'LICENSE').read_text()
    assert 'Apache License' in license_text and 'Version 2.0, January 2004' in license_text
    assert 'sail-sg/poolformer' in license_text and 'sail-sg/metaformer' in license_text
    assert "license='Apache-2.0'" in (Path(ROOT) / 'setup.py').read_text()
