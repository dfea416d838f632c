"""Pre-emption and time limits: stop after the iteration in flight with a checkpoint of it, continue from it.

A scheduler that pre-empts a job or reaches its time limit sends SIGTERM (Slurm: to every process of its tasks,
then SIGKILL after its ``KillWait``); ``sbatch --signal=USR1@SECONDS`` asks for SIGUSR1 ahead of the limit.
:class:`PreemptionHook` (installed by :class:`~mmmetaformer.engine.CrashSafeRunner`) turns either into: finish the
iteration in flight, agree across processes on where to stop, write ``iter_N.pth`` the crash-safe way, exit with
:func:`exit_status`. A run of the same config in the same work dir then resumes from it by itself
(:func:`checkpoint_to_continue`), skipping the batches the interrupted epoch had already trained and restoring each
process's random states, so that the iteration count, the learning rate schedule, the data order and (data loading
in the main process, ``num_workers=0``) the random augmentations continue as in an uninterrupted run.
"""
import atexit
import multiprocessing
import os
import os.path as osp
import random
import signal
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import all_gather_object, all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from ...registry import HOOKS
from ...utils.distributed import finish_distributed

PREEMPTION_SIGNALS = ('SIGTERM', 'SIGUSR1')
# Where a run is launched and from where it resumes, not what it trains: runs differing only here continue each other.
LAUNCH_SETTINGS = ('launcher', 'work_dir', 'resume', 'load_from', 'env_cfg', 'model_wrapper_cfg')


def exit_status(signum: int) -> int:
    """The exit status after a pre-emption checkpoint: 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1),
    what a shell reports for a process ended by that signal; Slurm's ``RequeueExit`` can name it."""
    return 128 + signum


def random_states() -> Dict[str, Any]:
    """This process's random number generators: Python's, NumPy's, torch's CPU one and the current CUDA device's."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def restore_random_states(states: Dict[str, Any]) -> None:
    """Put back what :func:`random_states` returned (the CUDA state only where there is a GPU)."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])


class ResumingBatchSampler:
    """A data loader's batch sampler for the pass after a pre-emption resume: drops the first ``skipped`` batches of
    its first pass (index lists only: nothing is loaded; its length is what remains of the pass, so the epoch's end
    is where mmengine's hooks expect it) and restores ``states`` when the first batch is drawn.

    Restoring there, after the data loader's iterator has drawn its base seed and before the first sample is loaded,
    leaves every generator where the uninterrupted run had it at the same batch. Later passes are the wrapped
    sampler's own; everything else (``sampler``, ``batch_size``, ...) is read from it.
    """

    def __init__(self, batch_sampler: Any, skipped: int, states: Optional[Dict[str, Any]]) -> None:
        self.batch_sampler = batch_sampler
        self.skipped = skipped
        self.states = states

    def __iter__(self) -> Iterator[List[int]]:
        batches = iter(self.batch_sampler)
        for _ in range(self.skipped):
            next(batches, None)
        for batch in batches:
            if self.states is not None:
                restore_random_states(self.states)
                self.states = None
            yield batch
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.skipped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__['batch_sampler'], name)


class LoaderWorkerSignals:
    """A data loader's ``worker_init_fn`` that keeps its worker processes alive through ``signals`` until ``stopping``
    is set, then runs ``init_fn``.

    Slurm signals every process of a task, loader workers included; torch's workers die of SIGTERM, and the training
    process would then fail at once, mid-iteration, from torch's SIGCHLD handler. Once the training process exits
    (``stopping`` is set at its exit, before multiprocessing ends daemonic workers with SIGTERM), a signal ends a
    worker with status 0, which torch does not report as a failed worker.
    """

    def __init__(self, signals: Sequence[int], stopping: Any, init_fn: Optional[Callable[[int], Any]]) -> None:
        self.signals = list(signals)
        self.stopping = stopping
        self.init_fn = init_fn

    def __call__(self, worker_id: int) -> None:
        for signum in self.signals:
            signal.signal(signum, self._on_signal)
        if self.init_fn is not None:
            self.init_fn(worker_id)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping.is_set():
            os._exit(0)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM or SIGUSR1 during training: finish the iteration in flight, save a checkpoint of it and exit with
    ``exit_status(signal)``; after resuming from such a checkpoint, continue the data and random streams where it
    stopped.

    The signal handler only records the signal. After every training iteration the processes agree (an all-reduce
    of the recorded signals), so all of them stop after the same iteration. The checkpoint ``iter_N.pth`` (N
    iterations done) goes through the runner's ``save_checkpoint``: :class:`~mmmetaformer.engine.CrashSafeRunner`
    writes it under a temporary name and renames it when complete. Its ``meta['preemption']`` records the batches
    done in the interrupted epoch and every process's random states. The data loaders' workers keep running through
    the signals until the training process exits (``LoaderWorkerSignals``).

    Args:
        signals: names of the signals that stop training this way.
    """

    priority = 'LOWEST'  # after the lr scheduler, logger and checkpoint hooks have handled the finished iteration

    def __init__(self, signals: Sequence[str] = PREEMPTION_SIGNALS) -> None:
        self.signals = [getattr(signal, name) for name in signals]
        self._received = 0
        self._previous_handlers: Dict[int, Any] = {}
        self._resumed_from: Optional[Dict[str, Any]] = None
        self._stopping = multiprocessing.Event()
        atexit.register(self._stopping.set)  # runs before multiprocessing's own exit handler, registered earlier

    def _record(self, signum: int, frame: Any) -> None:
        self._received = signum

    def before_train(self, runner) -> None:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            for signum in self.signals:
                self._previous_handlers[signum] = signal.signal(signum, self._record)
        for loop in (runner.train_loop, runner.val_loop):
            dataloader = getattr(loop, 'dataloader', None)
            if getattr(dataloader, 'num_workers', 0) and not isinstance(dataloader.worker_init_fn, LoaderWorkerSignals):
                dataloader.worker_init_fn = LoaderWorkerSignals(self.signals, self._stopping, dataloader.worker_init_fn)
        self._continue_data_and_random_streams(runner)

    def after_train(self, runner) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._resumed_from = dict(meta['preemption'], epoch=meta.get('epoch'), iter=meta.get('iter')) \
            if 'preemption' in meta else None

    def _continue_data_and_random_streams(self, runner) -> None:
        """After a resume from a pre-emption checkpoint (also called for a plain ``load_from``, where the loop's
        position does not match it and nothing happens)."""
        state, loop = self._resumed_from, runner.train_loop
        if state is None or (state['epoch'], state['iter']) != (loop.epoch, loop.iter):
            return
        states = state['random_states']
        if len(states) != get_world_size():
            runner.logger.warning(f'The pre-emption checkpoint was written by {len(states)} processes, this run has '
                                  f'{get_world_size()}: the interrupted epoch is trained from its start again and '
                                  'the random states are not restored.')
            return
        skipped = state['batches_done_in_epoch'] if isinstance(loop, EpochBasedTrainLoop) else 0
        dataloader = loop.dataloader
        # DataLoader refuses to set batch_sampler after construction; its iterators read it when they are created.
        object.__setattr__(dataloader, 'batch_sampler',
                           ResumingBatchSampler(dataloader.batch_sampler, skipped, states[runner.rank]))
        if skipped:
            runner.logger.info(f'Resumed inside epoch {loop.epoch + 1}: its first {skipped} batches, trained before '
                               'the pre-emption, are skipped.')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Stop here, with a checkpoint of this iteration, when any process has received a pre-emption signal."""
        received = torch.tensor([self._received], dtype=torch.int64)
        all_reduce(received, op='max')
        signum = int(received.item())
        if signum:
            self._save_and_exit(runner, batch_idx, signum)

    def _save_and_exit(self, runner, batch_idx: int, signum: int) -> None:
        filename = f'iter_{runner.iter + 1}.pth'
        preemption = dict(signal=signal.Signals(signum).name, batches_done_in_epoch=batch_idx + 1,
                          random_states=all_gather_object(random_states()))
        runner.save_checkpoint(runner.work_dir, filename, by_epoch=False, meta=dict(preemption=preemption))
        path = osp.join(runner.work_dir, filename)
        if is_main_process():
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(path)
        status = exit_status(signum)
        runner.logger.info(f'{preemption["signal"]} received: stopped after iteration {runner.iter + 1} and saved '
                           f'{path}; exiting with status {status}. Running the same command again continues from it.')
        finish_distributed()
        sys.exit(status)


def _training_settings(config_text: str) -> Dict[str, Any]:
    settings = Config.fromstring(config_text, file_format='.py').to_dict()
    return {key: value for key, value in settings.items() if key not in LAUNCH_SETTINGS}


def checkpoint_to_continue(runner, checkpoint: Optional[str]) -> Optional[str]:
    """``checkpoint`` (the work dir's newest complete one) if it was written by a run of the same config, else None;
    either way the log says which and why.

    The same config: equal settings apart from :data:`LAUNCH_SETTINGS` (so a ``dist_train.sh`` run continues under
    Slurm, and a different ``load_from`` does not prevent continuing).
    """
    if checkpoint is None:
        runner.logger.info(f'No checkpoint in {runner.work_dir}: training starts from the beginning.')
        return None
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False, mmap=True).get('meta', {}).get('cfg')
    if saved is None:
        runner.logger.info(f'Not resuming from {checkpoint}: it records no config. Pass --resume to continue from it.')
        return None
    previous, current = _training_settings(saved), _training_settings(runner.cfg.pretty_text)
    differing = sorted(key for key in previous.keys() | current.keys() if previous.get(key) != current.get(key))
    if differing:
        runner.logger.warning(f'Not resuming from {checkpoint}: it was trained with another config (differing: '
                              f'{", ".join(differing)}); training starts from the beginning. Pass --resume to '
                              'continue from it anyway, or choose another work dir.')
        return None
    runner.logger.info(f'Resuming from {checkpoint}: the work dir holds a checkpoint of this same config.')
    return checkpoint
