"""Reading mm configs: the library a config is for, and the dataset configs of its dataloaders."""
from typing import Iterator, Mapping, Optional

from mmengine.config import ConfigDict

from ..errors import InvalidSettingError

LIBRARIES = ('mmdet', 'mmseg', 'mmpretrain')


def library_of(cfg: Mapping, purpose: str) -> str:
    """The library a config is for, its ``default_scope``: 'mmdet', 'mmseg' or 'mmpretrain'.

    Args:
        cfg: A loaded mm config.
        purpose: What needs the library, for the error, e.g. 'export' or 'inference'.

    Raises:
        InvalidSettingError: ``default_scope`` is missing or names another library.
    """
    scope = cfg.get('default_scope')
    if scope not in LIBRARIES:
        raise InvalidSettingError(
            f'{purpose} needs a detector (mmdet), segmentor (mmseg) or classifier (mmpretrain) config; this config '
            f'has default_scope={scope!r}, expected one of {LIBRARIES}')
    return scope


def leaf_datasets(cfg: Optional[ConfigDict]) -> Iterator[ConfigDict]:
    """Every leaf dataset config of a (possibly wrapped) dataset config: the children of ``datasets`` (a
    concatenation) and the ``dataset`` of a wrapper (repeat, class balance), recursively."""
    if cfg is None:
        return
    if 'datasets' in cfg:
        for child in cfg['datasets']:
            yield from leaf_datasets(child)
    elif 'dataset' in cfg:
        yield from leaf_datasets(cfg['dataset'])
    else:
        yield cfg
