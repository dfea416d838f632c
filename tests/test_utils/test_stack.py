"""``import mmmetaformer`` refuses a stack that is too old or mixes upstream and OneDL packages, clearly."""
import importlib.metadata as metadata
import subprocess
import sys

import pytest

from mmmetaformer.utils import stack
from conftest import ROOT


def fake_versions(monkeypatch, versions):
    def version(name):
        if name in versions:
            return versions[name]
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(stack.metadata, 'version', version)


def test_the_installed_stack_passes():
    stack.check_stack()
    assert stack.check_package('mmengine', required=True) == metadata.version('onedl-mmengine')


def test_too_old_upstream_package_names_found_and_needed(monkeypatch):
    fake_versions(monkeypatch, {'onedl-mmengine': '0.10.12', 'mmdet': '3.3.0'})
    with pytest.raises(stack.StackVersionError,
                       match=r'mmdet: found mmdet 3\.3\.0, needed onedl-mmdetection>=3\.5\.1'):
        stack.check_stack()


def test_too_old_onedl_package(monkeypatch):
    fake_versions(monkeypatch, {'onedl-mmengine': '0.10.5'})
    with pytest.raises(stack.StackVersionError,
                       match=r'found onedl-mmengine 0\.10\.5, needed onedl-mmengine>=0\.10\.12'):
        stack.check_stack()


def test_upstream_and_onedl_mixed(monkeypatch):
    fake_versions(monkeypatch, {'onedl-mmengine': '0.10.12', 'onedl-mmcv': '2.3.6', 'mmcv': '2.1.0'})
    with pytest.raises(stack.StackVersionError,
                       match=r'mmcv is installed twice: onedl-mmcv 2\.3\.6 and upstream mmcv 2\.1\.0.*'
                             r'Needed: onedl-mmcv>=2\.3\.6'):
        stack.check_stack()


def test_missing_mmengine(monkeypatch):
    fake_versions(monkeypatch, {})
    monkeypatch.setattr(stack.importlib, 'import_module', lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(stack.StackVersionError, match=r'mmengine is not installed; needed: onedl-mmengine>=0\.10\.12'):
        stack.check_stack()


def test_import_needs_only_torch_and_mmengine():
    code = ('import sys; import mmmetaformer; '
            'bad = [m for m in ("mmdet", "mmseg", "mmpretrain", "mmcv", "timm") if m in sys.modules]; '
            'print(bad); assert not bad, bad')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_upstream_packages_are_fine_on_an_older_torch(monkeypatch):
    fake_versions(monkeypatch, {'mmengine': '0.10.4', 'mmdet': '3.3.0'})
    monkeypatch.setattr(stack, '_torch_too_new', lambda: False)
    stack.check_stack()
    assert (stack.check_package('mmengine', required=True), stack.check_package('mmdet')) == ('0.10.4', '3.3.0')


def test_pre_release_versions_compare_by_their_release_number():
    assert stack._version_tuple('0.10.12rc1') == (0, 10, 12)
    assert stack._version_tuple('2.13.0+cu130') == (2, 13, 0)
