"""Reading checkpoint files (local paths and URLs, as mmengine does) down to their state dict, and saying in words
what a file that cannot be read is."""
import os.path as osp
import re
import zipfile
from collections import OrderedDict
from typing import Optional

from torch import Tensor

from ...errors import FileAccessError, InvalidSettingError, MissingFileError
from .checkpoint_layouts import StateDict

URL = re.compile(r'^(https?|s3|openmmlab|torchvision|modelzoo|pavi)://')


def unwrap(checkpoint) -> StateDict:
    """The state dict inside a checkpoint file's content (plain, ``state_dict``, ``model`` or ``module``)."""
    if not isinstance(checkpoint, dict):
        raise InvalidSettingError(f'a checkpoint must be a dict of tensors, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return unwrap(checkpoint[key])
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in checkpoint.items()
                       if isinstance(v, Tensor))


def describe_unreadable_checkpoint(path: str, error: Exception) -> str:
    """What a local file that ``torch.load`` failed on (with ``error``) is, and what to do, in words: empty, a zip
    archive cut short (the save or the copy was interrupted), a torch checkpoint that torch refused (``error``
    says why), a zip archive of something else, a torch file of the old format cut short, a text file, or something
    else."""
    size = osp.getsize(path)
    if size == 0:
        return (f'{path} is empty (0 bytes): the save or copy that wrote it was interrupted. Use an earlier '
                f'checkpoint or copy the file again.')
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(b'PK'):
        if not zipfile.is_zipfile(path):
            return (f'{path} is a truncated zip archive ({size} bytes, its end is missing): the save or copy that '
                    f'wrote it was interrupted. Use an earlier checkpoint (tools/train.py --resume picks the newest '
                    f'complete one by itself) or copy the file again.')
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith('/data.pkl') or name == 'data.pkl' for name in archive.namelist()):
                cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                return f'{path} is a torch checkpoint that torch.load could not read: {cause}'
        return f'{path} is a zip archive but not a torch checkpoint (torch.save writes a data.pkl inside).'
    if head.startswith(b'\x80'):
        return (f'{path} looks like a torch checkpoint of the old (pickle) format that is damaged or cut short '
                f'({size} bytes): use an earlier checkpoint or copy the file again.')
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return f'{path} is not a torch checkpoint (an unknown binary format, {size} bytes).'
    first_line = text.strip().splitlines()[0][:60] if text.strip() else ''
    return (f'{path} is not a torch checkpoint but a text file (it starts with {first_line!r}); give the .pth file '
            f'that training wrote or tools/convert_checkpoint.py wrote.')


def check_checkpoint_path(path_or_url: str) -> None:
    """Check, before any work, that a checkpoint argument names a URL or an existing file.

    Raises:
        MissingFileError: nothing exists at the path.
        FileAccessError: the path is a folder.
    """
    if '://' in str(path_or_url):
        return
    if not osp.exists(path_or_url):
        raise MissingFileError(f'checkpoint {path_or_url} does not exist')
    if osp.isdir(path_or_url):
        raise FileAccessError(f'cannot read checkpoint {path_or_url}: it is a folder; give the checkpoint file in '
                              f'it (e.g. the .pth file that training wrote)')


def load_checkpoint_file(path_or_url: str, setting: Optional[str] = None) -> dict:
    """The content of a checkpoint file or URL (read as mmengine does, onto the CPU).

    Raises :class:`~mmmetaformer.errors.MissingFileError` for a missing file and
    :class:`~mmmetaformer.errors.FileAccessError` for a URL that cannot be downloaded (naming ``setting``, the
    config key that takes a local file instead), a folder, or a file that is not a complete torch checkpoint
    (:func:`describe_unreadable_checkpoint` says what it is).
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    is_url = bool(URL.match(str(path_or_url)))
    check_checkpoint_path(path_or_url)
    try:
        return CheckpointLoader.load_checkpoint(path_or_url, map_location='cpu')
    except Exception as error:  # noqa: BLE001  (network, file and unpickling errors come in many types)
        if is_url:
            local = f"/path/to/{path_or_url.rsplit('/', 1)[-1]}"
            use = f'e.g. --cfg-options {setting}={local}' if setting else f'e.g. {local}'
            raise FileAccessError(
                f'could not download the weights from {path_or_url} ({type(error).__name__}: {error}). Download the '
                f'file on a machine with internet access and use the local copy instead, {use} (any official '
                f'layout works; tools/convert_checkpoint.py is optional).') from error
        if isinstance(error, PermissionError):
            raise FileAccessError(f'cannot read checkpoint {path_or_url}: {error}') from error
        raise FileAccessError(describe_unreadable_checkpoint(path_or_url, error)) from error


def read_checkpoint(path_or_url: str, setting: Optional[str] = None) -> StateDict:
    """The state dict of a checkpoint file or URL (:func:`load_checkpoint_file`, errors included)."""
    return unwrap(load_checkpoint_file(path_or_url, setting))


def training_state_problem(path: str, content: dict) -> Optional[str]:
    """Why the content of checkpoint ``path`` cannot be resumed from (weights without the training state that
    training writes: ``meta`` with the epoch and iteration, ``optimizer``), or None."""
    meta = content.get('meta') if isinstance(content, dict) else None
    missing = [name for name, present in (
        ('meta.epoch', isinstance(meta, dict) and 'epoch' in meta),
        ('meta.iter', isinstance(meta, dict) and 'iter' in meta),
        ('optimizer', isinstance(content, dict) and 'optimizer' in content)) if not present]
    if not missing:
        return None
    return (f'{path} holds weights without the training state needed to resume (no {", ".join(missing)}): '
            f'--resume / resume=True continue a run from a checkpoint its training wrote. To start a new run from '
            f'these weights use --cfg-options load_from={path} without --resume.')

