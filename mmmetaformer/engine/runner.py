"""The runner of every config: checkpoints that survive a kill, resuming from the newest complete one."""
import glob
import os
import os.path as osp
import zipfile
from typing import Optional

import torch
from mmengine.dist import master_only
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..registry import RUNNERS
from .hooks.preemption import PreemptionHook, checkpoint_to_continue
from .hooks.startup_checks import StartupChecksHook


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
    data and files (:class:`~mmmetaformer.engine.hooks.StartupChecksHook`, which the runner registers).
    mmengine's ``compile`` setting compiles the model's forward pass (loss or prediction) for training, validation
    and test alike: mmengine's runner compiles the whole ``train_step``, optimizer step included, which dynamo fails
    to trace with mmengine's parameter groups on torch 2.13, and leaves validation and test eager.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_hook(StartupChecksHook())

    def _maybe_compile(self, _step_name: str) -> None:
        """mmengine's hook for its ``compile`` setting, which ``Runner.train`` calls with the step it would compile
        (``'train_step'``): the model's forward pass is compiled instead, whatever the step."""
        self._compile_forward()

    def _compile_forward(self) -> None:
        compile_cfg = self.cfg.get('compile')
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if not compile_cfg or model._compiled_call_impl is not None:
            return
        options = dict(compile_cfg) if isinstance(compile_cfg, dict) else {}
        model.compile(**options)
        self.logger.info(f'torch.compile: the model\'s forward pass is compiled ({options or "default options"}); '
                         'the first iterations of each input shape and mode are slow.')

    def register_hooks(self, default_hooks: Optional[dict] = None, custom_hooks: Optional[list] = None) -> None:
        """mmengine's default and custom hooks, then a :class:`~mmmetaformer.engine.hooks.PreemptionHook` unless the
        config lists one."""
        super().register_hooks(default_hooks, custom_hooks)
        if not any(isinstance(hook, PreemptionHook) for hook in self.hooks):
            self.register_hook(PreemptionHook())

    def train(self) -> torch.nn.Module:
        if not self._resume:
            continued = checkpoint_to_continue(self, latest_complete_checkpoint(self.work_dir))
            if continued is not None:
                self._resume, self._load_from = True, continued
        return super().train()

    def val(self) -> dict:
        self._compile_forward()
        return super().val()

    def test(self) -> dict:
        self._compile_forward()
        return super().test()

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        if '://' in out_dir:  # remote storage: no rename there
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        partial = filename + '.partial'
        super().save_checkpoint(out_dir, partial, *args, **kwargs)
        os.replace(osp.join(out_dir, partial), osp.join(out_dir, filename))

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = latest_complete_checkpoint(self.work_dir)
            if self._load_from is not None:
                self.logger.info(f'Resuming from the newest complete checkpoint: {self._load_from}')
        super().load_or_resume()
