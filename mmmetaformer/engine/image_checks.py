"""The image check before the first iteration (``data_checks.images``, see
:mod:`~mmmetaformer.engine.hooks.startup_checks`).

Every file that a data set's annotations name is checked before the first iteration (existence, and decoding the
image; a segmentation map's values must also be classes of the data set), so that a missing or corrupt image stops
the run at once with the list of bad files, not hours in with a traceback or a loss over labels no output stands
for. ``CrashSafeRunner`` runs it on each data set as it builds its data loader.
"""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmengine.dist import all_gather_object, get_rank, get_world_size

from ..errors import InvalidSettingError
from .hooks.startup_checks import SPLIT_NAMES, StartupCheckError

AUTO_LIMIT = 100_000  # 'auto' checks data sets with fewer images than this
SAMPLE_SIZE = 1000
SHOWN = 5  # bad files named in a message


def sample_files(info: dict) -> List[Tuple[str, bool]]:
    """The local files one sample's annotation names, each with whether it is a segmentation map: its image and,
    for segmentation, its label map."""
    files = [(info.get(key), key == 'seg_map_path') for key in ('img_path', 'seg_map_path')]
    return [(path, is_map) for path, is_map in files if isinstance(path, str) and '://' not in path]


class LabelRange:
    """The label values a segmentation map of an mmseg data set may hold: its classes (shifted by one with
    ``reduce_zero_label``, where 0 is unlabelled) and the ignored value."""

    def __init__(self, dataset) -> None:
        self.classes = len(dataset.metainfo['classes'])
        self.reduce_zero_label = bool(getattr(dataset, 'reduce_zero_label', False))
        self.ignore_index = int(getattr(dataset, 'ignore_index', 255))

    @classmethod
    def of(cls, dataset) -> Optional['LabelRange']:
        """The range of an mmseg data set that keeps the labels as they are (no ``label_map`` of a class subset),
        else None."""
        metainfo = getattr(dataset, 'metainfo', None) or {}
        label_map = metainfo.get('label_map') or {}
        if not hasattr(dataset, 'reduce_zero_label') or not metainfo.get('classes') or \
                any(old != new for old, new in label_map.items()):
            return None
        return cls(dataset)

    def problem(self, labels: np.ndarray) -> str:
        """Which values of a decoded map lie beyond the classes, or an empty string."""
        values = np.unique(labels)
        values = values[values != (255 if self.reduce_zero_label else self.ignore_index)]
        first = 1 if self.reduce_zero_label else 0
        beyond = values[values >= first + self.classes]
        if not beyond.size:
            return ''
        listed = ', '.join(map(str, beyond[:5].tolist()))
        return (f'label values {listed} beyond the data set\'s {self.classes} classes ({first}-'
                f'{first + self.classes - 1}{", 0 unlabelled" if self.reduce_zero_label else ""}, '
                f'{255 if self.reduce_zero_label else self.ignore_index} ignored)')


def file_problem(path: str, decode: bool, labels: Optional[LabelRange] = None) -> str:
    """Why ``path`` cannot be used as an image (missing, not decodable) or, with ``labels``, as a segmentation map
    (values beyond the classes), or an empty string."""
    if not osp.isfile(path):
        return 'missing'
    if not decode:
        return ''
    from PIL import Image
    try:
        with Image.open(path) as image:
            if labels is None:
                image.draft('RGB', (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG: decode at 1/8
            image.load()
            return labels.problem(np.asarray(image)) if labels is not None else ''
    except Exception as error:  # noqa: BLE001  (PIL raises many types for broken files)
        return f'cannot be decoded ({type(error).__name__}: {error})'


def find_bad_samples(dataset, mode: str) -> List[Tuple[int, str, str]]:
    """``(index, path, problem)`` of every sample of ``dataset`` whose files fail the ``mode`` check ('all',
    'sample' or 'exist'); the processes of a distributed run share the work."""
    from mmengine.utils import ProgressBar
    total = len(dataset)
    decoded = set(range(total)) if mode == 'all' else set()
    if mode == 'sample':
        decoded = {round(i * (total - 1) / max(1, SAMPLE_SIZE - 1)) for i in range(min(total, SAMPLE_SIZE))}
    mine = range(get_rank(), total, get_world_size())
    progress = ProgressBar(len(mine)) if get_rank() == 0 and total else None
    labels = LabelRange.of(dataset)
    bad = []
    for index in mine:
        for path, is_map in sample_files(dataset.get_data_info(index)):
            problem = file_problem(path, index in decoded, labels if is_map else None)
            if problem:
                bad.append((index, path, problem))
                break
        if progress is not None:
            progress.update()
    if progress is not None:
        print(flush=True)
    return sorted(found for rank in all_gather_object(bad) for found in rank)


def check_images(dataset, split: str, settings: Dict, log) -> None:
    """Check the files of ``dataset`` (the ``split`` data set) as ``settings['images']`` says; bad samples stop
    the run with :class:`~mmmetaformer.engine.hooks.startup_checks.StartupCheckError`, or with
    ``skip_bad_images`` are dropped from the data set with a warning through ``log``."""
    mode, total = settings['images'], len(dataset)
    if mode == 'auto':
        mode = 'all' if total < AUTO_LIMIT else 'off'
        if mode == 'off':
            log(f'the {SPLIT_NAMES[split]} data set has {total} samples: its images are not checked before the run '
                f'(data_checks=dict(images="all" or "sample") checks them).')
    if mode == 'off' or not total:
        return
    bad = find_bad_samples(dataset, mode)
    if not bad:
        return
    listed = '; '.join(f'{path} ({problem})' for _, path, problem in bad[:SHOWN])
    more = f'; and {len(bad) - SHOWN} more' if len(bad) > SHOWN else ''
    what = f'{len(bad)} of the {total} samples of the {SPLIT_NAMES[split]} data set have bad files: {listed}{more}'
    if not settings['skip_bad_images']:
        raise StartupCheckError(f'{what}. Replace or remove them, or set data_checks=dict(skip_bad_images=True) to '
                                f'run without these samples; nothing has run yet.')
    try:
        dataset.get_subset_(sorted(set(range(total)) - {index for index, _, _ in bad}))
    except NotImplementedError as error:
        raise InvalidSettingError(f'{what}. data_checks.skip_bad_images cannot drop samples from a '
                                  f'{type(dataset).__name__}; replace or remove the files.') from error
    log(f'{what}. Running without these samples (data_checks.skip_bad_images=True).')
