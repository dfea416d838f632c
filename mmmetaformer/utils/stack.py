"""Import-time checks of the OpenMMLab stack: a clear error instead of a confusing failure deep in a run."""
import importlib
import importlib.metadata as metadata
import re
from typing import Dict, Optional, Tuple

# import name -> (OneDL distribution, lowest version that works with torch >= 2.6, advice)
REQUIREMENTS: Dict[str, Tuple[str, str]] = {
    'mmengine': ('onedl-mmengine', '0.10.12'),
    'mmcv': ('onedl-mmcv', '2.3.6'),
    'mmdet': ('onedl-mmdetection', '3.5.1'),
    'mmseg': ('onedl-mmsegmentation', '1.4.2'),
    'mmpretrain': ('onedl-mmpretrain', '1.3.6'),
}
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
