"""Settings that would make a run crash late or go silently wrong, found before its first iteration.

:class:`StartupChecksHook` runs :func:`check_run_settings` in ``before_run`` of ``train()``, ``val()`` and
``test()``, once the data loaders are built and before the weights are loaded;
:class:`~mmmetaformer.engine.CrashSafeRunner` (the runner of every config here, also under mm's own tools) registers
it, and any mmengine runner takes it as ``custom_hooks=[dict(type='mmmetaformer.StartupChecksHook')]``. It finds a
head whose ``num_classes`` differs from the data set's classes (mmdet's CocoMetric only fails after a whole epoch,
with an IndexError), a training set that yields no batch, a ``load_from`` / ``resume`` file that does not exist.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ...errors import InvalidSettingError
from ...registry import HOOKS
from ...utils.configs import leaf_datasets

# Heads whose outputs are the data set's classes (mmdet, mmseg, mmpretrain). An RPN head is class-agnostic.
CLASS_HEADS = ('bbox_head', 'mask_head', 'decode_head', 'auxiliary_head', 'head')
SPLIT_NAMES = {'train': 'training', 'val': 'validation', 'test': 'test'}


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
