"""Walking the dataset configs of a config's dataloaders."""
from typing import Iterator, Optional

from mmengine.config import ConfigDict


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
