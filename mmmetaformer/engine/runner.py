"""The runner of every config: one training run per work dir, checkpoints that survive a kill and a full disk,
resuming from the newest complete one, data and checkpoints checked before the first iteration."""
import copy
import errno
import glob
import os
import os.path as osp
import shutil
import socket
import zipfile
from typing import Optional

import torch
from mmengine.dist import all_gather_object, get_rank, is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner
from torch import nn

from ..errors import DiskFullError, InvalidSettingError, WorkDirInUseError
from ..models.utils import (
    check_model_weights,
    check_start_weights,
    load_checkpoint_file,
    training_state_problem,
    unwrap,
)
from ..registry import RUNNERS
from .hooks.preemption import PreemptionHook, checkpoint_to_continue
from .hooks.startup_checks import (
    SPLIT_NAMES,
    StartupCheckError,
    StartupChecksHook,
    data_checks_settings,
    library_class_problem,
)
from .image_checks import check_images
from .work_dir_lock import acquire_work_dir_lock


def latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint in ``work_dir`` (or named by its ``last_checkpoint``) that was written to the end.

    torch writes zip archives whose directory comes last, so a file cut short by a kill is not a zip file.
    """
    candidates = glob.glob(osp.join(work_dir, 'epoch_*.pth')) + glob.glob(osp.join(work_dir, 'iter_*.pth'))
    named = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(named):
        with open(named) as f:
            candidates.append(f.read().strip())
    complete = [path for path in set(candidates) if osp.isfile(path) and zipfile.is_zipfile(path)]
    return max(complete, key=osp.getmtime, default=None)


def checkpoint_size_estimate(runner: Runner) -> int:
    """The bytes the next checkpoint will take: the size of the newest complete one in the work dir, else the
    bytes of the model's and the optimizer's tensors."""
    previous = latest_complete_checkpoint(runner.work_dir)
    if previous is not None:
        return osp.getsize(previous)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    total = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    optimizer = getattr(getattr(runner, 'optim_wrapper', None), 'optimizer', None)
    for state in (optimizer.state.values() if optimizer is not None else ()):
        total += sum(value.numel() * value.element_size() for value in state.values() if torch.is_tensor(value))
    return total


@RUNNERS.register_module()
class CrashSafeRunner(Runner):
    """mmengine's ``Runner`` for runs that may be killed at any moment (SIGKILL, a pre-empted node).

    A checkpoint is written under a temporary name and renamed once complete, so a ``*.pth`` file is never half
    written; and resuming without a path takes the newest complete checkpoint of the work dir, also when the kill
    came between writing it and updating ``last_checkpoint`` (mmengine would then start again from scratch).
    Training not told to resume continues from the work dir's newest complete checkpoint when the same config wrote
    it (:func:`~mmmetaformer.engine.hooks.preemption.checkpoint_to_continue`), and SIGTERM / SIGUSR1 stop it after
    the iteration in flight with a checkpoint of that iteration (:class:`~mmmetaformer.engine.hooks.PreemptionHook`,
    added unless the config lists one): a pre-empted or requeued job goes on by running the same command again.
    The configs select it with ``runner_type``, so mmdet's, mmseg's and mmpretrain's own ``tools/train.py`` use it too.

    Before the first iteration of ``train()``, ``val()`` and ``test()`` it checks the run's settings against its
    data and files (:class:`~mmmetaformer.engine.hooks.StartupChecksHook`, which the runner registers), the images
    of each data set as its loader is built (``data_checks``, :mod:`~mmmetaformer.engine.image_checks`), and the
    checkpoint to load: a file that is not a complete torch checkpoint, weights without training state for a resume,
    a checkpoint of another architecture each stop the run with a :class:`~mmmetaformer.errors.UserError`.
    ``train()`` holds the lock of the work dir (:mod:`~mmmetaformer.engine.work_dir_lock`; ``lock_work_dir=False``
    in the config goes without), so that a second run in the same folder stops at once. A checkpoint save that
    finds the disk full removes its partial file and stops with :class:`~mmmetaformer.errors.DiskFullError`; a save
    that may not fit is warned about before it starts.
    mmengine's ``compile`` setting compiles the model's forward pass (loss or prediction) for training, validation
    and test alike: mmengine's runner compiles the whole ``train_step``, optimizer step included, which dynamo fails
    to trace with mmengine's parameter groups on torch 2.13, and leaves validation and test eager.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._compiled_model: Optional[nn.Module] = None  # the model whose forward pass compile_cfg has compiled
        super().__init__(*args, **kwargs)
        self.register_hook(StartupChecksHook())

    def _maybe_compile(self, _step_name: str) -> None:
        """mmengine's hook for its ``compile`` setting, which ``Runner.train`` calls with the step it would compile
        (``'train_step'``): the model's forward pass is compiled instead, whatever the step."""
        self._compile_forward()

    def _compile_forward(self) -> None:
        compile_cfg = self.cfg.get('compile')
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if not compile_cfg or model is self._compiled_model:
            return
        options = dict(compile_cfg) if isinstance(compile_cfg, dict) else {}
        model.compile(**options)
        self._compiled_model = model
        self.logger.info(f'torch.compile: the model\'s forward pass is compiled ({options or "default options"}); '
                         'the first iterations of each input shape and mode are slow.')

    def register_hooks(self, default_hooks: Optional[dict] = None, custom_hooks: Optional[list] = None) -> None:
        """mmengine's default and custom hooks, then a :class:`~mmmetaformer.engine.hooks.PreemptionHook` unless the
        config lists one."""
        super().register_hooks(default_hooks, custom_hooks)
        if not any(isinstance(hook, PreemptionHook) for hook in self.hooks):
            self.register_hook(PreemptionHook())

    def train(self) -> torch.nn.Module:
        lock = self._lock_work_dir()
        try:
            if not self._resume:
                continued = checkpoint_to_continue(self, latest_complete_checkpoint(self.work_dir))
                if continued is not None:
                    self._resume, self._load_from = True, continued
            return super().train()
        finally:
            if lock is not None:
                lock.release()

    def _lock_work_dir(self):
        """The work dir's lock, taken by the first process only (all processes of a distributed run are one
        run); every process stops if it is held by another run."""
        if not self.cfg.get('lock_work_dir', True):
            return None
        lock, message = None, None
        if get_rank() == 0:
            try:
                lock = acquire_work_dir_lock(self.work_dir, self.logger.warning)
            except WorkDirInUseError as error:
                message = str(error)
        message = next((found for found in all_gather_object(message) if found), None)
        if message is not None:
            raise WorkDirInUseError(message)
        return lock

    def build_dataloader(self, dataloader, seed: Optional[int] = None, diff_rank_seed: bool = False):
        """mmengine's data loader, its data set checked first (class names of mmseg types, then the images as
        ``data_checks`` says)."""
        if not isinstance(dataloader, dict) or not isinstance(dataloader.get('dataset'), dict):
            return super().build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        from mmengine.registry import DATASETS
        split = next((name for name in SPLIT_NAMES if dataloader is getattr(self, f'_{name}_dataloader', None)),
                     'train')
        settings = data_checks_settings(self.cfg)
        problem = library_class_problem(dataloader['dataset'], split)
        if problem:
            raise StartupCheckError(problem)
        dataset = DATASETS.build(dataloader['dataset'])
        if hasattr(dataset, 'full_init'):
            dataset.full_init()
        check_images(dataset, split, settings, self.logger.warning)
        dataloader = copy.copy(dataloader)
        dataloader['dataset'] = dataset
        dataset.__deepcopy__ = lambda memo: dataset  # mmengine deep-copies the loader's config: keep one data set
        try:
            return super().build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        finally:
            del dataset.__deepcopy__

    def val(self) -> dict:
        self._compile_forward()
        return super().val()

    def test(self) -> dict:
        self._compile_forward()
        return super().test()

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """mmengine's save on the first process, written under a name of that process
        (``<name>.<host>.<pid>.partial``) and renamed once complete. A full disk removes the partial file and raises
        :class:`~mmmetaformer.errors.DiskFullError` on every process (mmengine calls this on every process)."""
        message = None
        if is_main_process():
            try:
                self._save_checkpoint_whole(out_dir, filename, *args, **kwargs)
            except DiskFullError as error:
                message = str(error)
        message = next((found for found in all_gather_object(message) if found), None)
        if message is not None:
            raise DiskFullError(message)

    def _save_checkpoint_whole(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        if '://' in out_dir:  # remote storage: no rename there
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        target = osp.join(out_dir, filename)
        partial = osp.join(out_dir, f'{filename}.{socket.gethostname()}.{os.getpid()}.partial')
        needed = checkpoint_size_estimate(self)
        os.makedirs(out_dir, exist_ok=True)
        free = shutil.disk_usage(out_dir).free
        if free < needed * 1.1:
            self.logger.warning(f'{target} may not fit: the last checkpoint took {needed} bytes and {free} bytes '
                                f'are free on the disk of {out_dir}. Free some space (older checkpoints, '
                                f'default_hooks.checkpoint.max_keep_ckpts) before the run stops on it.')
        try:
            super().save_checkpoint(out_dir, osp.basename(partial), *args, **kwargs)
        except OSError as error:
            written = osp.getsize(partial) if osp.exists(partial) else 0
            if osp.exists(partial):
                os.remove(partial)
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            last = latest_complete_checkpoint(self.work_dir)
            kept = f'the last complete checkpoint, {last}, is intact' if last else 'no complete checkpoint exists yet'
            raise DiskFullError(
                f'the disk is full: writing {target} needed about {max(needed, written)} bytes and '
                f'{shutil.disk_usage(out_dir).free} bytes are free on the disk of {out_dir} (the partial file is '
                f'removed). Training stopped; {kept}. Free space and run the same command again to continue.'
            ) from error
        os.replace(partial, target)

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = latest_complete_checkpoint(self.work_dir)
            if self._load_from is not None:
                self.logger.info(f'Resuming from the newest complete checkpoint: {self._load_from}')
        if self._load_from and not self._has_loaded:
            self._check_checkpoint(self._load_from)
        super().load_or_resume()

    def _check_checkpoint(self, path: str) -> None:
        """Refuse the checkpoint to resume from or load before mmengine reads it: a file that is not a complete
        torch checkpoint, weights without training state to resume from, a checkpoint of another model (exactly
        this model's tensors for a resume or a test, the backbone's for the start of a new training run)."""
        content = load_checkpoint_file(path, setting='load_from')
        if self._resume:
            problem = training_state_problem(path, content)
            if problem:
                raise InvalidSettingError(problem)
        if self._resume or not isinstance(self._train_loop, BaseLoop):  # a resume, a test or a validation
            check_model_weights(unwrap(content), self.model, path)
        else:
            check_start_weights(unwrap(content), self.model, path)
