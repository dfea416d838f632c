"""Reading checkpoint files (local paths and URLs, as mmengine does) down to their state dict."""
import re
from collections import OrderedDict
from typing import Optional

from torch import Tensor

from ...errors import FileAccessError, MissingFileError
from .checkpoint_layouts import StateDict


def unwrap(checkpoint) -> StateDict:
    """The state dict inside a checkpoint file's content (plain, ``state_dict``, ``model`` or ``module``)."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'a checkpoint must be a dict of tensors, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return unwrap(checkpoint[key])
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in checkpoint.items()
                       if isinstance(v, Tensor))


def read_checkpoint(path_or_url: str, setting: Optional[str] = None) -> StateDict:
    """Read a local file or URL (as mmengine does) and return its state dict.

    Fails with a clear error when a URL cannot be downloaded (naming ``setting``, the config key that takes a local
    file instead) or when the file is not a torch checkpoint.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    try:
        content = CheckpointLoader.load_checkpoint(path_or_url, map_location='cpu')
    except Exception as error:  # noqa: BLE001  (network, file and unpickling errors come in many types)
        cause = f'{type(error).__name__}: {error}'
        if re.match(r'^(https?|s3|openmmlab|torchvision|modelzoo|pavi)://', str(path_or_url)):
            local = f"/path/to/{path_or_url.rsplit('/', 1)[-1]}"
            use = f'e.g. --cfg-options {setting}={local}' if setting else f'e.g. {local}'
            raise FileAccessError(

                f'could not download the weights from {path_or_url} ({cause}). Download the file on a machine with '
                f'internet access and use the local copy instead, {use} (any official layout works; '
                f'tools/convert_checkpoint.py is optional).') from error
        if isinstance(error, FileNotFoundError):
            raise MissingFileError(str(error)) from error
        raise FileAccessError(f'cannot read {path_or_url} as a torch checkpoint ({cause})') from error
    return unwrap(content)
