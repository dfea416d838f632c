"""The tested versions of the stack, in one place, and the import-time check of the OpenMMLab packages.

:data:`PINS` is the one list of pinned versions: ``tools/install.sh`` installs them (it runs this file as a script,
``python mmmetaformer/utils/stack.py requirements GROUP``), :func:`check_stack` (run by ``import mmmetaformer``)
refuses OpenMMLab packages older than them with a clear error instead of a confusing failure deep in a run, and a
test checks that README.md's set-up section names them. This module imports nothing from mmmetaformer, so that it
also runs as a script before anything is installed.
"""
import argparse
import importlib
import importlib.metadata as metadata
import re
import sys
from typing import Dict, List, Optional, Tuple

# distribution -> (pinned version, install group). tools/install.sh installs the groups in this order: 'torch' from
# the package registry, 'mmcv' built from source with its C++ ops, 'stack' the rest.
PINS: Dict[str, Tuple[str, str]] = {
    'torch': ('2.13.0', 'torch'),
    'torchvision': ('0.28.0', 'torch'),
    'onedl-mmcv': ('2.3.6', 'mmcv'),
    'onedl-mmengine': ('0.10.12', 'stack'),
    'onedl-mmdetection': ('3.5.1', 'stack'),
    'onedl-mmsegmentation': ('1.4.2', 'stack'),
    'onedl-mmpretrain': ('1.3.6', 'stack'),
    'timm': ('1.0.31', 'stack'),
    'onnx': ('1.23.2', 'stack'),
    'onnxruntime': ('1.31.1', 'stack'),
    'onnxscript': ('0.7.2', 'stack'),
    'grad-cam': ('1.5.7', 'stack'),
    'ruff': ('0.17.5', 'stack'),
    # tools/coverage.sh (`patch = subprocess` in pyproject.toml needs coverage.py >= 7.10)
    'coverage': ('7.17.3', 'stack'),
    # the documentation build (docs/en, run by tests/test_docs.py)
    'sphinx': ('9.0.4', 'stack'),
    'myst-parser': ('5.2.0', 'stack'),
    'furo': ('2025.12.19', 'stack'),
}
# Installed with the 'stack' group at whatever version the registry offers.
UNPINNED = ('pytest',)
GROUPS = ('torch', 'mmcv', 'stack')
# What `tools/install.sh --wheelhouse` collects for a machine that has torch (the libraries, timm for the side-by-side
# benchmark, pytest for tools/gpu_check.sh; not the docs and lint tools), and `--from` installs; with their
# dependencies.
WHEELHOUSE = ('onedl-mmcv', 'onedl-mmengine', 'onedl-mmdetection', 'onedl-mmsegmentation', 'onedl-mmpretrain', 'timm',
              'pytest')

# import name -> OneDL distribution; the lowest version that works (with torch >= 2.6) is the pinned one.
ONEDL_NAMES = {'mmengine': 'onedl-mmengine', 'mmcv': 'onedl-mmcv', 'mmdet': 'onedl-mmdetection',
               'mmseg': 'onedl-mmsegmentation', 'mmpretrain': 'onedl-mmpretrain'}
REQUIREMENTS: Dict[str, Tuple[str, str]] = {module: (dist, PINS[dist][0]) for module, dist in ONEDL_NAMES.items()}
UPSTREAM_NAMES = {'mmengine': 'mmengine', 'mmcv': 'mmcv', 'mmdet': 'mmdet', 'mmseg': 'mmsegmentation',
                  'mmpretrain': 'mmpretrain'}
INSTALL_HINT = 'Run `bash tools/install.sh` (see README.md) to get the tested stack.'


class StackVersionError(ImportError):
    """The installed OpenMMLab stack is too old or mixes upstream and OneDL packages."""


def _version_tuple(version: str) -> Tuple[int, ...]:
    """``'0.10.12'`` -> (0, 10, 12); a local or pre-release suffix ends the number (``'2.3.6rc1'`` -> (2, 3, 6))."""
    parts = []
    for piece in version.split('+')[0].split('.'):
        digits = re.match(r'\d+', piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.end() != len(piece):
            break
    return tuple(parts)


def _dist_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_too_new() -> bool:
    """The upstream OpenMMLab releases break on torch >= 2.6 (e.g. mmengine cannot resume a checkpoint)."""
    import torch
    return _version_tuple(torch.__version__) >= (2, 6)


def check_package(module: str, required: bool = False) -> Optional[str]:
    """Check one OpenMMLab package; return its version, or None when it is absent and not ``required``."""
    onedl, needed = REQUIREMENTS[module]
    upstream = UPSTREAM_NAMES[module]
    onedl_version, upstream_version = _dist_version(onedl), _dist_version(upstream)
    if onedl_version and upstream_version:
        raise StackVersionError(
            f'{module} is installed twice: {onedl} {onedl_version} and upstream {upstream} {upstream_version} '
            f'provide the same module and overwrite each other. Needed: {onedl}>={needed}. '
            f'Run `pip uninstall -y {upstream} {onedl}` and `pip install {onedl}=={needed}`. {INSTALL_HINT}')
    found = onedl_version or upstream_version
    if found is None:
        try:  # a source checkout without distribution metadata
            found = getattr(importlib.import_module(module), '__version__', None)
        except ImportError:
            found = None
    if found is None:
        if required:
            raise StackVersionError(f'{module} is not installed; needed: {onedl}>={needed}. {INSTALL_HINT}')
        return None
    if upstream_version and _torch_too_new() or not upstream_version and _version_tuple(found) < _version_tuple(needed):
        dist = onedl if onedl_version else upstream
        raise StackVersionError(
            f'{module}: found {dist} {found}, needed {onedl}>={needed} (the upstream OpenMMLab releases are '
            f'frozen and break on torch >= 2.6). {INSTALL_HINT}')
    return found


def check_stack() -> None:
    """Check mmengine (required) and whichever of mmcv/mmdet/mmseg/mmpretrain are installed."""
    for module in REQUIREMENTS:
        check_package(module, required=(module == 'mmengine'))


def torchvision_for(torch_version: str) -> str:
    """The torchvision release built for a torch release: ``'2.11.0'`` -> ``'0.26.0'`` (minor + 15 since 2.0)."""
    major, minor, *patch = _version_tuple(torch_version) + (0,)
    if major != 2:
        raise ValueError(f'torch {torch_version}: only torch 2.x releases are supported')
    return f'0.{minor + 15}.{patch[0]}'


def requirements(group: str, torch_version: Optional[str] = None) -> List[str]:
    """The pip requirements (``name==version``) of one install group of :data:`PINS` (the 'stack' group also lists
    :data:`UNPINNED`), or of :data:`WHEELHOUSE` for ``'wheelhouse'``. ``torch_version`` replaces the pinned torch
    (and torchvision) of the 'torch' group, for a wheelhouse made for another torch."""
    if group == 'wheelhouse':
        return [f'{name}=={PINS[name][0]}' if name in PINS else name for name in WHEELHOUSE]
    if group not in GROUPS:
        raise ValueError(f'unknown install group {group!r}; the groups are {", ".join(GROUPS)}, wheelhouse')
    if group == 'torch' and torch_version:
        return [f'torch=={torch_version}', f'torchvision=={torchvision_for(torch_version)}']
    pinned = [f'{name}=={version}' for name, (version, in_group) in PINS.items() if in_group == group]
    return pinned + (list(UNPINNED) if group == 'stack' else [])


def mismatched_pins(names: Optional[List[str]] = None) -> List[str]:
    """``name: found X, pinned Y`` for each of ``names`` (default: all of :data:`PINS`, :data:`UNPINNED` and
    mmmetaformer) that is missing or installed at another version than its pin (a local suffix such as ``+cpu``
    is ignored)."""
    wanted = {name: PINS[name][0] if name in PINS else None
              for name in names or [*PINS, *UNPINNED, 'mmmetaformer']}
    problems = []
    for name, version in wanted.items():
        found = _dist_version(name)
        if found is None or version is not None and found.split('+')[0] != version:
            problems.append(f'{name}: found {found or "nothing"}, pinned {version or "any version"}')
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    """``requirements GROUP [--torch VERSION]``: print the group's pip requirements, one a line;
    ``check [NAME ...]``: exit 1 (listing them) if pinned packages are missing or at other versions."""
    parser = argparse.ArgumentParser(description='The pinned versions of the stack (tools/install.sh reads them).')
    commands = parser.add_subparsers(dest='command', required=True)
    requirements_parser = commands.add_parser('requirements')
    requirements_parser.add_argument('group', choices=(*GROUPS, 'wheelhouse'))
    requirements_parser.add_argument('--torch', help="another torch release for the 'torch' group")
    commands.add_parser('check').add_argument('names', nargs='*')
    args = parser.parse_args(argv)
    if args.command == 'requirements':
        print('\n'.join(requirements(args.group, args.torch)))
        return 0
    problems = mismatched_pins(args.names)
    if problems:
        print('\n'.join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
