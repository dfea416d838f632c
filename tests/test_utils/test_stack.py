"""``import mmmetaformer`` refuses a stack that is too old or mixes upstream and OneDL packages, clearly."""
import importlib.metadata as metadata
import runpy
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


def test_a_version_piece_without_digits_ends_the_number():
    assert stack._version_tuple('1.dev0') == (1,)


def test_an_absent_optional_package_is_none(monkeypatch):
    fake_versions(monkeypatch, {'onedl-mmengine': '0.10.12'})
    monkeypatch.setattr(stack.importlib, 'import_module', lambda name: (_ for _ in ()).throw(ImportError(name)))
    assert stack.check_package('mmdet') is None
    stack.check_stack()  # mmcv, mmdet, mmseg and mmpretrain are optional


def test_install_groups_list_their_pins():
    assert stack.requirements('torch') == ['torch==2.13.0', 'torchvision==0.28.0']
    assert stack.requirements('mmcv') == ['onedl-mmcv==2.3.6']
    group = stack.requirements('stack')
    assert group[0] == 'onedl-mmengine==0.10.12' and group[-1] == 'pytest' and 'coverage==7.17.3' in group
    with pytest.raises(ValueError, match="unknown install group 'docs'; the groups are torch, mmcv, stack, wheelhouse"):
        stack.requirements('docs')


def test_mismatched_pins_name_what_was_found_and_what_is_pinned(monkeypatch):
    fake_versions(monkeypatch, {'torch': '2.13.0+cpu', 'timm': '1.0.30', 'pytest': '9.0.0', 'mmmetaformer': '1.0.0'})
    assert stack.mismatched_pins(['torch', 'timm', 'onnx', 'pytest']) == [
        'timm: found 1.0.30, pinned 1.0.31', 'onnx: found nothing, pinned 1.23.2']
    # by default every pin, pytest and mmmetaformer: all but torch (a local suffix ignored), pytest and mmmetaformer
    assert [problem.split(':')[0] for problem in stack.mismatched_pins()] == [name for name in stack.PINS
                                                                            if name != 'torch']
    fake_versions(monkeypatch, {})
    assert stack.mismatched_pins(['pytest', 'mmmetaformer']) == [
        'pytest: found nothing, pinned any version', 'mmmetaformer: found nothing, pinned any version']


def test_the_requirements_command_prints_a_group_one_a_line(capsys):
    assert stack.main(['requirements', 'torch', '--torch', '2.11.0']) == 0
    assert capsys.readouterr().out == 'torch==2.11.0\ntorchvision==0.26.0\n'
    assert stack.main(['requirements', 'mmcv']) == 0
    assert capsys.readouterr().out == 'onedl-mmcv==2.3.6\n'
    with pytest.raises(SystemExit) as stop:
        stack.main(['requirements', 'docs'])
    assert stop.value.code == 2 and "invalid choice: 'docs'" in capsys.readouterr().err


def test_the_check_command_exits_1_listing_the_mismatched_pins(monkeypatch, capsys):
    fake_versions(monkeypatch, {'torch': '2.13.0', 'timm': '1.0.30'})
    assert stack.main(['check', 'torch']) == 0
    assert capsys.readouterr() == ('', '')
    assert stack.main(['check', 'torch', 'timm', 'onnx']) == 1
    assert capsys.readouterr().err == 'timm: found 1.0.30, pinned 1.0.31\nonnx: found nothing, pinned 1.23.2\n'


def test_the_module_runs_as_a_script(monkeypatch, capsys):
    """``python mmmetaformer/utils/stack.py requirements mmcv`` (as tools/install.sh runs it)."""
    monkeypatch.setattr(sys, 'argv', [stack.__file__, 'requirements', 'mmcv'])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(stack.__file__, run_name='__main__')
    assert stop.value.code == 0 and capsys.readouterr().out == 'onedl-mmcv==2.3.6\n'
