"""SIGTERM during training: the iteration in flight is finished and saved, and the same command continues from it as
if nothing had happened (single process, and two processes through dist_train.sh)."""
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from mmmetaformer.engine.hooks.preemption import PreemptionHook, ResumingBatchSampler, random_states
from e2e import (
    FIRST_ITERATION,
    assert_same_weights,
    assert_stopped_mid_epoch,
    checkpoint_meta,
    free_port,
    logged_losses,
    preemptible_config,
    run_tool,
    start_tool,
    tiny_seg_config,
    wait_for_line,
)

pytest.importorskip('mmdet')


# A SIGTERM sent once the first iteration is logged must arrive before the epoch's last iteration: that leaves six
# iterations of one process (about 4 s) and four of two processes on two cores (about 5 s).
@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    """16 training images: 8 iterations per epoch for one process of 2 images."""
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 16), ('val', 4)))


@pytest.fixture(scope='module')
def shapes_for_two(module_tmp_factory):
    """24 training images: 6 iterations per epoch for two processes of 2 images."""
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 24), ('val', 4)))


def test_resuming_batch_sampler_skips_without_loading_and_restores_the_random_states():
    batches = torch.utils.data.BatchSampler(range(10), batch_size=3, drop_last=False)
    torch.manual_seed(1)
    saved = random_states()
    expected = torch.rand(1)
    torch.manual_seed(2)
    resuming = ResumingBatchSampler(batches, skipped=2, states=saved)
    assert len(resuming) == 2 and resuming.batch_size == 3
    first_pass = iter(resuming)
    assert next(first_pass) == [6, 7, 8] and len(resuming) == 2
    assert torch.equal(torch.rand(1), expected)  # the states were restored as the first batch was drawn
    assert list(first_pass) == [[9]] and len(resuming) == 4
    assert list(resuming) == list(batches)  # later passes are the sampler's own


@pytest.mark.parametrize('name', ['SIGTERM', 'SIGUSR1'])
def test_the_signal_handler_only_records_the_signal_while_training(name):
    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    hook = PreemptionHook()
    hook.before_train(SimpleNamespace(train_loop=None, val_loop=None))
    signal.raise_signal(signum)
    assert hook._received == signum
    hook.after_train(None)
    assert signal.getsignal(signum) is before


def test_only_a_checkpoint_of_the_same_config_is_continued_without_resume(tmp_path):
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from mmmetaformer.engine.hooks.preemption import checkpoint_to_continue

    def runner(**settings):
        cfg = Config(dict(dict(model=dict(depth=12), lr=0.1, launcher='none', work_dir=str(tmp_path)), **settings))
        return SimpleNamespace(cfg=cfg, work_dir=str(tmp_path), logger=MMLogger.get_instance('preemption-test'))

    checkpoint = str(tmp_path / 'iter_3.pth')
    torch.save(dict(meta=dict(cfg=runner(launcher='pytorch', work_dir='elsewhere').cfg.pretty_text)), checkpoint)
    assert checkpoint_to_continue(runner(launcher='slurm'), checkpoint) == checkpoint
    assert checkpoint_to_continue(runner(lr=0.2), checkpoint) is None
    assert checkpoint_to_continue(runner(), None) is None


class Said:
    """A logger that keeps what it was told, by level."""

    def __init__(self) -> None:
        self.told = dict(info=[], warning=[])
        self.info, self.warning = self.told['info'].append, self.told['warning'].append


def test_a_checkpoint_that_records_no_config_is_not_continued_without_resume(tmp_path):
    from mmengine.config import Config

    from mmmetaformer.engine.hooks.preemption import checkpoint_to_continue
    checkpoint = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict={}), checkpoint)
    logger = Said()
    runner = SimpleNamespace(cfg=Config(dict(lr=0.1)), work_dir=str(tmp_path), logger=logger)
    assert checkpoint_to_continue(runner, checkpoint) is None
    assert logger.told['info'] == [f'Not resuming from {checkpoint}: it records no config. Pass --resume to '
                                   'continue from it.']


def test_a_preemption_checkpoint_of_another_process_count_restarts_its_epoch_with_a_warning():
    """Two processes' random states, one process now: neither skipping batches nor restoring states."""
    batches = torch.utils.data.BatchSampler(range(8), batch_size=2, drop_last=False)
    loader = SimpleNamespace(batch_sampler=batches, num_workers=0)
    logger = Said()
    runner = SimpleNamespace(train_loop=SimpleNamespace(epoch=0, iter=2, dataloader=loader), val_loop=None, rank=0,
                             logger=logger)
    hook = PreemptionHook()
    hook.after_load_checkpoint(runner, dict(meta=dict(epoch=0, iter=2, preemption=dict(
        signal='SIGTERM', batches_done_in_epoch=2, random_states=[random_states(), random_states()]))))
    hook.before_train(runner)
    hook.after_train(runner)
    assert loader.batch_sampler is batches
    assert logger.told['warning'] == [
        'The pre-emption checkpoint was written by 2 processes, this run has 1: the interrupted epoch is trained '
        'from its start again and the random states are not restored.']
    assert logger.told['info'] == []


def test_loader_workers_outlive_the_signals_until_the_training_process_exits(monkeypatch):
    """A worker's handler ignores the signal while training goes on, and ends the worker with status 0 once the
    training process is exiting (``os._exit`` recorded here: the handler runs in this process)."""
    import multiprocessing

    from mmmetaformer.engine.hooks.preemption import LoaderWorkerSignals
    exits, initialised = [], []

    def record_exit(status):
        exits.append(status)
        raise SystemExit(status)

    stopping = multiprocessing.Event()
    before = signal.getsignal(signal.SIGUSR1)
    try:
        LoaderWorkerSignals([signal.SIGUSR1], stopping, initialised.append)(3)
        assert initialised == [3]
        signal.raise_signal(signal.SIGUSR1)  # still training: the worker goes on
        assert exits == []
        monkeypatch.setattr(os, '_exit', record_exit)
        stopping.set()
        with pytest.raises(SystemExit):
            signal.raise_signal(signal.SIGUSR1)
        assert exits == [0]
        LoaderWorkerSignals([signal.SIGUSR1], stopping, None)(0)  # no init function of the loader's own
        assert signal.getsignal(signal.SIGUSR1).__self__.init_fn is None
    finally:
        signal.signal(signal.SIGUSR1, before)


@pytest.mark.e2e
def test_sigterm_mid_epoch_then_the_same_command_continues_exactly(shapes, tmp_path):
    config = preemptible_config(tmp_path, shapes)
    reference, work, log = tmp_path / 'reference', tmp_path / 'work', tmp_path / 'first.log'
    run_tool(['tools/train.py', config, '--work-dir', str(reference)])
    command = ['tools/train.py', config, '--work-dir', str(work)]
    process = start_tool(command, log)
    wait_for_line(log, FIRST_ITERATION, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-6000:]
    stopped = assert_stopped_mid_epoch(work, iterations_per_epoch=8)
    output = run_tool(command).stdout
    assert 'Resuming from' in output and f'its first {stopped} batches' in output
    assert checkpoint_meta(work / 'epoch_2.pth')['iter'] == 16
    assert_same_weights(reference / 'epoch_2.pth', work / 'epoch_2.pth')
    assert logged_losses(work) == logged_losses(reference)


@pytest.mark.e2e
def test_sigterm_to_the_loader_workers_too_still_saves_and_continues(shapes, tmp_path):
    """As Slurm signals a task: the training process and its two persistent data loader workers at once."""
    config = preemptible_config(tmp_path, shapes)
    work, log = tmp_path / 'work', tmp_path / 'first.log'
    command = ['tools/train.py', config, '--work-dir', str(work), '--cfg-options', 'train_dataloader.num_workers=2',
               'train_dataloader.persistent_workers=True']
    process = start_tool(command, log, new_session=True)
    wait_for_line(log, FIRST_ITERATION, process)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-6000:]
    stopped = assert_stopped_mid_epoch(work, iterations_per_epoch=8)
    run_tool(command)
    steps = [step for step, _ in logged_losses(work)]
    assert steps == list(range(1, 17)), f'stopped after {stopped}; logged iterations {steps}'


@pytest.mark.e2e
def test_dist_train_sigterm_then_run_again_finishes_every_iteration_once(shapes_for_two, tmp_path):
    config = preemptible_config(tmp_path, shapes_for_two)
    work, log = tmp_path / 'work', tmp_path / 'first.log'
    command = ['tools/dist_train.sh', config, '2', '--work-dir', str(work)]
    process = start_tool(command, log, env={'PORT': free_port()})
    wait_for_line(log, FIRST_ITERATION, process)
    process.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both processes
    assert process.wait(timeout=300) != 0
    stopped = assert_stopped_mid_epoch(work, iterations_per_epoch=6)
    run_tool(command, env={'PORT': free_port()})
    assert checkpoint_meta(work / 'epoch_2.pth')['iter'] == 12
    steps = [step for step, _ in logged_losses(work)]
    assert steps == list(range(1, 13)), f'stopped after {stopped}; logged iterations {steps}'


@pytest.mark.e2e
def test_sigterm_in_an_iteration_based_run_then_the_same_command_continues_exactly(tmp_path):
    """Semantic FPN (iteration-based, InfiniteSampler, random crops and flips, dropout in the head). Sixteen
    iterations of about 0.3 s: the signal, sent once the first is logged, has seconds to arrive before the last."""
    pytest.importorskip('mmseg')
    from mmmetaformer.testing import make_ade20k_like
    ade = make_ade20k_like(str(tmp_path / 'ade'), splits=(('training', 4), ('validation', 2)), size=(96, 128))
    config = tmp_path / 'fpn_poolformer_s12_40k_ade20k.py'
    tiny_seg_config(tmp_path, ade, 'fpn_poolformer_s12_40k_ade20k')
    config.write_text(config.read_text() + """
randomness = dict(seed=0)
train_cfg = dict(max_iters=16, val_interval=16)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=16))
""")
    reference, work, log = tmp_path / 'reference', tmp_path / 'work', tmp_path / 'first.log'
    run_tool(['tools/train.py', str(config), '--work-dir', str(reference)])
    command = ['tools/train.py', str(config), '--work-dir', str(work)]
    process = start_tool(command, log)
    wait_for_line(log, r'Iter\(train\) +\[ *1/16\]', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-6000:]
    assert_stopped_mid_epoch(work, iterations_per_epoch=16)
    assert 'Resuming from' in run_tool(command).stdout
    assert_same_weights(reference / 'iter_16.pth', work / 'iter_16.pth')
    assert logged_losses(work) == logged_losses(reference)
