"""Settings that would make a run crash late or go silently wrong, found before its first iteration.

:class:`StartupChecksHook` runs :func:`check_run_settings` in ``before_run`` of ``train()``, ``val()`` and
``test()``, once the data loaders are built and before the weights are loaded;
:class:`~mmmetaformer.engine.CrashSafeRunner` (the runner of every config here, also under mm's own tools) registers
it, and any mmengine runner takes it as ``custom_hooks=[dict(type='mmmetaformer.StartupChecksHook')]``. It finds a
head whose ``num_classes`` differs from the data set's classes (mmdet's CocoMetric only fails after a whole epoch,
with an IndexError), class names that the annotations do not have and annotations of categories that are no
configured class (mmdet and mmpretrain would drop or mislabel them silently), a training set that yields no batch, a
``load_from`` / ``resume`` file that does not exist.

The config's ``data_checks`` setting tunes the checks of the data (:func:`data_checks_settings`)::

    data_checks = dict(
        images='auto',                  # 'auto' (default): 'all' for data sets under 100,000 images, else 'off';
                                        # 'all': every file exists and decodes; 'sample': every file exists and
                                        # 1,000 spread over the data set decode; 'exist': existence only; 'off'
        skip_bad_images=False,          # True: run without the samples whose files are bad, with a warning
        ignore_other_categories=False,  # True: annotations of categories that are no configured class are
                                        # dropped (mmdet's own behaviour) instead of stopping the run
    )
"""
import difflib
import json
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ...errors import InvalidSettingError
from ...registry import HOOKS
from ...utils.configs import leaf_datasets

# Heads whose outputs are the data set's classes (mmdet, mmseg, mmpretrain). An RPN head is class-agnostic.
CLASS_HEADS = ('bbox_head', 'mask_head', 'decode_head', 'auxiliary_head', 'head')
SPLIT_NAMES = {'train': 'training', 'val': 'validation', 'test': 'test'}


DEFAULT_DATA_CHECKS = dict(images='auto', skip_bad_images=False, ignore_other_categories=False)
IMAGE_CHECKS = ('auto', 'all', 'sample', 'exist', 'off')


def closest(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``name``, or an empty string."""
    found = difflib.get_close_matches(str(name), [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f' (did you mean {found[0]!r}?)' if found else ''


def data_checks_settings(cfg) -> Dict:
    """The config's ``data_checks`` over :data:`DEFAULT_DATA_CHECKS`; an unknown key or value raises
    :class:`~mmmetaformer.errors.InvalidSettingError`."""
    given = dict(cfg.get('data_checks') or {})
    unknown = [key for key in given if key not in DEFAULT_DATA_CHECKS]
    if unknown:
        raise InvalidSettingError(
            f'data_checks has no setting {unknown[0]!r}{closest(unknown[0], DEFAULT_DATA_CHECKS)}; its settings: '
            f'{", ".join(DEFAULT_DATA_CHECKS)} (docs/en/user_guides/train_test.md, "Start-up checks").')
    settings = {**DEFAULT_DATA_CHECKS, **given}
    if settings['images'] in (True, False):
        settings['images'] = 'auto' if settings['images'] else 'off'
    if settings['images'] not in IMAGE_CHECKS:
        images = settings['images']
        raise InvalidSettingError(f'data_checks.images={images!r}{closest(images, IMAGE_CHECKS)} must be one of '
                                  f'{", ".join(IMAGE_CHECKS)}')
    return settings



class StartupCheckError(InvalidSettingError):
    """A run's settings contradict its data or name missing files; raised on every process before the first
    iteration, the message naming the settings involved."""


def class_heads(model: torch.nn.Module) -> List[Tuple[str, int]]:
    """(config path, ``num_classes``) of every head whose outputs are the data set's classes, e.g.
    ``('model.roi_head.bbox_head', 80)``; heads in a list get their index (``model.auxiliary_head[0]``)."""
    model = model.module if is_model_wrapper(model) else model
    heads = []
    for name, module in model.named_modules():
        parts = name.split('.')
        named = [part for part in parts if not part.isdigit()]
        if not named or not named[0].endswith('head') or 'rpn' in named[0] or named[-1] not in CLASS_HEADS:
            continue
        num_classes = getattr(module, 'num_classes', None)
        if isinstance(num_classes, int):
            path = ''.join(f'[{part}]' if part.isdigit() else f'.{part}' for part in parts)
            heads.append((f'model{path}', num_classes))
    return heads


def _class_list(classes: Sequence[str], shown: int = 10) -> str:
    names = ', '.join(map(str, classes[:shown]))
    return names + (f', ... ({len(classes) - shown} more)' if len(classes) > shown else '')


def class_count_problems(model: torch.nn.Module, dataset: Dataset, split: str,
                         classes_named: bool = True) -> List[str]:
    """A message for each class head whose ``num_classes`` differs from the number of classes in the metainfo of
    ``dataset`` (the ``split`` data set: ``'train'``, ``'val'`` or ``'test'``).

    ``classes_named=False`` says the config does not name the classes: a classification data set that found them
    as folders on disk is then only refused when it has more classes than a head (its labels would lie beyond the
    head's outputs), since a head over more classes than the folders at hand (a few ImageNet folders under a
    1000-class head) still trains and tests.
    """
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not classes:
        return []  # a data set without class names: nothing to compare
    found_on_disk = not classes_named and getattr(dataset, 'folder_to_idx', None) is not None
    problems = []
    for head, num_classes in class_heads(model):
        if num_classes == len(classes) or (found_on_disk and num_classes > len(classes)):
            continue
        problems.append(
            f'{head}.num_classes={num_classes} but the {SPLIT_NAMES[split]} data set has {len(classes)} classes '
            f'(metainfo classes: {_class_list(classes)}); set num_classes={len(classes)} in {head}, or name the '
            f"head's {num_classes} classes in {split}_dataloader.dataset (metainfo=dict(classes=(...))).")
    return problems


def empty_epoch_problem(dataloader: DataLoader, split: str = 'train') -> Optional[str]:
    """Why ``dataloader`` (of a finite sampler) would give no batch at all, or None: an empty data set, or a batch
    size above the samples of each process with ``drop_last=True``."""
    from mmengine.dataset import DefaultSampler
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    sampler = getattr(batch_sampler, 'sampler', None)
    # An infinite sampler (iteration-based schedules) fills batches from any non-empty data set.
    if not isinstance(sampler, (DefaultSampler, SequentialSampler, RandomSampler, DistributedSampler)):
        return None
    total, per_process = len(dataloader.dataset), len(sampler)
    what = f'the {SPLIT_NAMES[split]} data set'
    if total == 0:
        return f'{what} ({split}_dataloader.dataset) is empty (after its filters): no iteration would run.'
    batch_size = getattr(batch_sampler, 'batch_size', None)
    if getattr(batch_sampler, 'drop_last', False) and batch_size and batch_size > per_process:
        processes = get_world_size()
        spread = f' ({per_process} per process over {processes} processes)' if processes > 1 else ''
        return (f'{split}_dataloader.batch_size={batch_size} with drop_last=True but {what} has {total} samples'
                f'{spread}: no iteration would run. Lower {split}_dataloader.batch_size to at most {per_process} '
                f'or set drop_last=False.')
    return None


def missing_checkpoint_problem(load_from: Optional[str], resume: bool) -> Optional[str]:
    """Why ``load_from`` (the checkpoint to load, or to resume from with ``resume=True``) cannot be used, or None.
    URLs are left to the download."""
    if not load_from or '://' in str(load_from) or osp.isfile(load_from):
        return None
    role = 'the checkpoint to resume from (resume=True)' if resume else 'the checkpoint to start from'
    return f'load_from={load_from}, {role}, does not exist.'


def stop_on_problems(problems: List[str]) -> None:
    """Raise :class:`StartupCheckError` with every process's problems, on every process, if any found one (a
    file missing on one node only): no process goes on to wait for the others in the first collective step."""
    found = list(dict.fromkeys(problem for rank in all_gather_object(problems) for problem in rank))
    if found:
        raise StartupCheckError('the run would fail or go wrong; nothing has run yet:\n  ' + '\n  '.join(found))


def classes_named_in_config(runner, split: str) -> bool:
    """Whether the config names the classes of the ``split`` data set (``metainfo.classes`` or ``classes``)."""
    loader = runner.cfg.get(f'{split}_dataloader') or {}
    return any('classes' in (leaf.get('metainfo') or {}) or 'classes' in leaf
               for leaf in leaf_datasets(loader.get('dataset')))


def _unknown_names(classes: Sequence[str], known: Sequence[str]) -> List[str]:
    """Each of ``classes`` that ``known`` lacks, quoted, with the closest known name."""
    return [f'{name!r}{closest(name, known)}' for name in classes if name not in known]


def coco_class_problems(dataset: Dataset, split: str, ignore_other_categories: bool) -> List[str]:
    """How the classes of a COCO-format ``dataset`` (mmdet's ``CocoDataset`` and its subclasses) differ from the
    categories of its annotation file: configured class names that no category has (their annotations would be
    missing), and annotations whose category is no configured class (mmdet drops them: the objects become
    background), unless ``ignore_other_categories``."""
    ann_file = str(getattr(dataset, 'ann_file', '') or '')
    classes = list((getattr(dataset, 'metainfo', None) or {}).get('classes') or ())
    if not hasattr(dataset, 'cat_ids') or not ann_file.endswith('.json') or not classes:
        return []
    from mmengine.fileio import get_local_path
    with get_local_path(ann_file, backend_args=getattr(dataset, 'backend_args', None)) as local, open(local) as f:
        content = json.load(f)
    categories = {category['id']: category['name'] for category in content.get('categories', [])}
    where = f'{split}_dataloader.dataset'
    problems = []
    unknown = _unknown_names(classes, list(categories.values()))
    if unknown:
        problems.append(
            f'{where}: the classes {", ".join(unknown)} are no category of {ann_file} (its categories: '
            f'{_class_list(list(categories.values()))}); the names in metainfo=dict(classes=(...)) must be those of '
            f'the annotation file.')
    configured_ids = {cat_id for cat_id, name in categories.items() if name in classes}
    dropped = Counter(annotation.get('category_id') for annotation in content.get('annotations', [])
                      if annotation.get('category_id') not in configured_ids)
    if dropped and not ignore_other_categories:
        kinds = [f'id {cat_id} ({categories[cat_id]!r}, no configured class)' if cat_id in categories else
                 f'id {cat_id} (no category of the file)' for cat_id in sorted(dropped, key=str)]
        counts = ', '.join(f'{kind}: {dropped[cat_id]}' for kind, cat_id in zip(kinds, sorted(dropped, key=str)))
        problems.append(
            f'{where}: {sum(dropped.values())} annotations of {ann_file} have a category that is no configured class '
            f'and would be dropped (their objects learned as background): {counts}. Add the classes to '
            f'metainfo=dict(classes=(...)), correct the category ids, or set '
            f'data_checks=dict(ignore_other_categories=True) to drop them knowingly.')
    return problems


def folder_class_problems(dataset: Dataset, split: str, classes_named: bool) -> List[str]:
    """How the classes named in the config differ from the class folders of an mmpretrain ``CustomDataset``: names
    of no folder, or a folder whose samples get the label of another name (the labels follow the folders)."""
    folders = getattr(dataset, 'folder_to_idx', None)
    classes = list((getattr(dataset, 'metainfo', None) or {}).get('classes') or ())
    if not folders or not classes_named or not classes or type(dataset).__name__ != 'CustomDataset':
        return []  # ImageNet and the like name their wnid folders with readable names on purpose
    where = f'{split}_dataloader.dataset'
    unknown = _unknown_names(classes, list(folders))
    if unknown:
        return [f'{where}: the classes {", ".join(unknown)} are no class folder of the data set (its folders: '
                f'{_class_list(sorted(folders, key=folders.get))}); the samples are labelled by folder, so the '
                f'names in metainfo=dict(classes=(...)) must be the folder names.']
    swapped = [folder for folder, label in folders.items() if label >= len(classes) or classes[label] != folder]
    if swapped:
        order = sorted(folders, key=folders.get)
        return [f'{where}: the samples of folder {swapped[0]!r} get label {folders[swapped[0]]}, which the classes '
                f'name {classes[folders[swapped[0]]] if folders[swapped[0]] < len(classes) else "nothing"!r}: list '
                f'the classes in the order of the labels, classes=({", ".join(map(repr, order))}).']
    return []


def label_problems(dataset: Dataset, split: str) -> List[str]:
    """Classification labels of an annotation list that lie beyond the configured classes (``gt_label`` >= the
    number of classes): no head output would stand for them."""
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not classes or getattr(dataset, 'folder_to_idx', None) or not hasattr(dataset, 'get_gt_labels'):
        return []
    labels = Counter(int(label) for label in dataset.get_gt_labels() if int(label) >= len(classes))
    if not labels:
        return []
    listed = ', '.join(f'{label} ({count} samples)' for label, count in sorted(labels.items())[:10])
    return [f'{split}_dataloader.dataset: labels {listed} of {getattr(dataset, "ann_file", "the annotation list")} '
            f'are beyond its {len(classes)} classes (0-{len(classes) - 1}); name every class in '
            f'metainfo=dict(classes=(...)) or correct the labels.']


def class_name_problems(runner, dataset: Dataset, split: str) -> List[str]:
    """The class-name and category-id checks of ``dataset`` (the ``split`` data set) for every library; wrapped
    data sets (concatenated, repeated) are checked through their leaves."""
    children = getattr(dataset, 'datasets', None) or ([dataset.dataset] if hasattr(dataset, 'dataset') else [])
    if children:
        return [problem for child in children for problem in class_name_problems(runner, child, split)]
    ignore = data_checks_settings(runner.cfg)['ignore_other_categories']
    return (coco_class_problems(dataset, split, ignore)
            + folder_class_problems(dataset, split, classes_named_in_config(runner, split))
            + label_problems(dataset, split))


def library_class_problem(dataset_cfg, split: str) -> Optional[str]:
    """mmseg data sets take only classes of their type's ``METAINFO`` (a subset selects them); a name outside it
    would fail when the data set is built. Checked on the config, before that."""
    from mmengine.registry import DATASETS
    classes = (dataset_cfg.get('metainfo') or {}).get('classes') if isinstance(dataset_cfg, dict) else None
    if not classes:
        return None
    dataset_type = dataset_cfg.get('type')
    if isinstance(dataset_type, str):
        with DATASETS.switch_scope_and_registry(None) as registry:  # the registry of the current scope
            dataset_type = registry.get(dataset_type)
    known = list((getattr(dataset_type, 'METAINFO', None) or {}).get('classes') or ())
    if not known or not dataset_type.__module__.startswith('mmseg'):
        return None
    unknown = _unknown_names(classes, known)
    if not unknown:
        return None
    return (f'{split}_dataloader.dataset: the classes {", ".join(unknown)} are not classes of '
            f'{dataset_type.__name__} (its classes: {_class_list(known)}); give a subset of them in '
            f'metainfo=dict(classes=(...)), or another dataset type for other classes.')


def check_run_settings(runner, splits: Sequence[str]) -> None:
    """Check a runner whose loops of ``splits`` are built, before its first iteration; raises
    :class:`StartupCheckError` on every process if anything is wrong."""
    problems = [missing_checkpoint_problem(runner._load_from, runner._resume)]
    for split in splits:
        dataloader = getattr(getattr(runner, f'{split}_loop'), 'dataloader', None)
        if dataloader is None:
            continue
        problems += class_count_problems(runner.model, dataloader.dataset, split,
                                         classes_named_in_config(runner, split))
        if get_rank() == 0:  # the same files on every process: read them once
            problems += class_name_problems(runner, dataloader.dataset, split)
        if split == 'train':
            problems.append(empty_epoch_problem(dataloader))
    stop_on_problems([problem for problem in problems if problem])


def built_splits(runner) -> List[str]:
    """The splits (``'train'``, ``'val'``, ``'test'``) whose loops the runner has built: those of the ``train()``,
    ``val()`` or ``test()`` call under way."""
    from mmengine.runner import BaseLoop
    return [split for split in SPLIT_NAMES if isinstance(getattr(runner, f'_{split}_loop', None), BaseLoop)]


@HOOKS.register_module()
class StartupChecksHook(Hook):
    """Checks a run's settings against its data and files before its first iteration (:func:`check_run_settings`
    in ``before_run``, for the splits whose loops are built), and stops every process with
    :class:`StartupCheckError` if anything is wrong."""

    priority = 'HIGHEST'

    def before_run(self, runner) -> None:
        check_run_settings(runner, built_splits(runner))
