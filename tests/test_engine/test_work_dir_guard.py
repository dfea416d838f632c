"""Nothing lost in the work dir: one training run per work dir (engine/work_dir_lock.py), checkpoints written under
a name of their process, a full disk that removes the partial file and says what it needed (CrashSafeRunner)."""
import errno
import itertools
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from mmmetaformer.engine.work_dir_lock import LOCK_NAME, WorkDirLock
from mmmetaformer.errors import DiskFullError, WorkDirInUseError

NAMES = (f'guard{index}' for index in itertools.count())  # mmengine keys loggers by experiment name


def test_a_second_lock_on_the_work_dir_names_the_holder_and_what_to_do(tmp_path):
    first = WorkDirLock(str(tmp_path))
    first.acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder['host'] == socket.gethostname() and holder['pid'] == os.getpid()
    with pytest.raises(WorkDirInUseError) as error:
        WorkDirLock(str(tmp_path)).acquire()  # flock locks of two opens conflict, also in one process
    message = str(error.value)
    assert f'host {socket.gethostname()}, PID {os.getpid()}, started {holder["started"]}' in message
    assert 'another --work-dir' in message
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    second = WorkDirLock(str(tmp_path))
    second.acquire()
    assert second.held
    second.release()


def test_the_lock_of_a_killed_run_on_this_host_is_taken_over_and_one_of_another_host_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(host=socket.gethostname(), pid=dead.pid, started='then')))
    said = []
    lock = WorkDirLock(str(tmp_path), said.append)
    lock.acquire()
    assert said == [f'{tmp_path / LOCK_NAME}: taking over the lock of a run that ended without releasing it (host '
                    f'{socket.gethostname()}, PID {dead.pid}, started then); it is no longer running.']
    assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == os.getpid()
    lock.release()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(host='node-elsewhere', pid=1, started='then')))
    with pytest.raises(WorkDirInUseError, match=f'delete {tmp_path / LOCK_NAME} and start again'):
        WorkDirLock(str(tmp_path)).acquire()


def toy_runner(work_dir, width: int = 64, **options):
    """A CrashSafeRunner over a linear model and 4 random samples (2 iterations per epoch), checkpoint each epoch."""
    from mmengine.model import BaseModel

    from mmmetaformer.engine import CrashSafeRunner

    class Linear(BaseModel):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(width, width)

        def forward(self, inputs, mode='tensor'):
            output = self.layer(torch.stack(inputs))
            return dict(loss=output.pow(2).mean()) if mode == 'loss' else output

    samples = [dict(inputs=torch.randn(width)) for _ in range(4)]
    return CrashSafeRunner(
        model=Linear(), work_dir=str(work_dir), experiment_name=next(NAMES),
        train_dataloader=dict(dataset=samples, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(type='LoggerHook')),
        **options)


def test_a_second_training_run_in_a_held_work_dir_stops_before_its_first_iteration(tmp_path):
    holder = WorkDirLock(str(tmp_path))
    holder.acquire()
    runner = toy_runner(tmp_path)
    with pytest.raises(WorkDirInUseError, match=f'PID {os.getpid()}'):
        runner.train()
    assert runner.iter == 0 and not list(tmp_path.glob('*.pth'))
    holder.release()
    other = WorkDirLock(str(tmp_path / 'unlocked'))
    other.acquire()
    toy_runner(tmp_path / 'unlocked', cfg=dict(lock_work_dir=False)).train()  # lock_work_dir=False: no lock taken
    assert (tmp_path / 'unlocked' / 'epoch_2.pth').exists()
    other.release()


def test_checkpoints_are_written_under_a_name_of_their_process(tmp_path, monkeypatch):
    from mmengine.fileio.backends import LocalBackend
    written = []
    put = LocalBackend.put
    monkeypatch.setattr(LocalBackend, 'put', lambda self, obj, path: written.append(str(path)) or put(self, obj, path))
    toy_runner(tmp_path).train()
    assert written == [str(tmp_path / f'epoch_{epoch}.pth.{socket.gethostname()}.{os.getpid()}.partial')
                       for epoch in (1, 2)]
    assert sorted(path.name for path in tmp_path.glob('*.pth*')) == ['epoch_1.pth', 'epoch_2.pth']
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end of training


def fail_the_second_save(monkeypatch, code: int, message: str) -> None:
    """The epoch-2 checkpoint write stops halfway with ``OSError(code, message)``, as a disk would."""
    from mmengine.fileio.backends import LocalBackend
    put = LocalBackend.put

    def write(self, obj, path):
        if 'epoch_2' not in str(path):
            return put(self, obj, path)
        with open(path, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        raise OSError(code, message)
    monkeypatch.setattr(LocalBackend, 'put', write)


def test_a_full_disk_removes_the_partial_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    fail_the_second_save(monkeypatch, errno.ENOSPC, 'No space left on device')
    runner = toy_runner(tmp_path)
    with pytest.raises(DiskFullError) as error:
        runner.train()
    size = (tmp_path / 'epoch_1.pth').stat().st_size
    assert f'writing {tmp_path / "epoch_2.pth"} needed about {size} bytes and ' in str(error.value)
    assert f'the last complete checkpoint, {tmp_path / "epoch_1.pth"}, is intact' in str(error.value)
    assert sorted(path.name for path in tmp_path.glob('*.pth*')) == ['epoch_1.pth']
    assert torch.load(tmp_path / 'epoch_1.pth', weights_only=False)['meta']['epoch'] == 1


def test_a_work_dir_on_a_small_tmpfs_stops_with_the_sizes_and_warns_first(tmp_path, capfd):
    """A real full disk where this may mount a tmpfs (root): room for one checkpoint, not two."""
    mount = tmp_path / 'small'
    mount.mkdir()
    width = 256  # a checkpoint of about 0.5 MB (weights and momentum)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=800k', 'tmpfs', str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        work = mount / 'work'
        runner = toy_runner(work, width=width)
        with pytest.raises(DiskFullError) as error:
            runner.train()
        message = str(error.value)
        assert f'writing {work / "epoch_2.pth"} needed about {(work / "epoch_1.pth").stat().st_size} bytes' in message
        assert 'bytes are free' in message and 'epoch_1.pth, is intact' in message
        assert sorted(path.name for path in work.glob('*.pth*')) == ['epoch_1.pth']
        assert f'{work / "epoch_2.pth"} may not fit' in capfd.readouterr().out
    finally:
        subprocess.run(['umount', '--lazy', str(mount)], check=True)  # the run's log file stays open


def test_a_process_counts_as_alive_unless_the_kernel_knows_no_such_process(monkeypatch):
    """A PID that signal 0 may not reach (a process of another user) is alive; only "no such process" is dead."""
    from mmmetaformer.engine.work_dir_lock import _process_alive
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    assert _process_alive(os.getpid()) and not _process_alive(dead.pid)

    def kill_of_another_user(pid, signum):
        raise PermissionError(errno.EPERM, 'Operation not permitted')

    monkeypatch.setattr(os, 'kill', kill_of_another_user)
    assert _process_alive(dead.pid)


def without_flock(monkeypatch, code: int = errno.ENOLCK) -> None:
    """The work dir on a file system whose ``flock`` fails with ``code`` (e.g. ENOLCK: some NFS mounts)."""
    import fcntl

    def flock(handle, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, 'flock', flock)


def test_without_flock_the_pid_in_the_lock_file_decides(tmp_path, monkeypatch):
    without_flock(monkeypatch)
    path = tmp_path / LOCK_NAME
    lock = WorkDirLock(str(tmp_path))
    lock.acquire()  # no file yet: taken
    assert lock.held and json.loads(path.read_text())['pid'] == os.getpid()
    lock.release()
    alive = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE)
    try:
        path.write_text(json.dumps(dict(host=socket.gethostname(), pid=alive.pid, started='now')))
        with pytest.raises(WorkDirInUseError, match=f'PID {alive.pid}, started now.*without working locks'):
            WorkDirLock(str(tmp_path)).acquire()
    finally:
        alive.communicate()
    said = []
    lock = WorkDirLock(str(tmp_path), said.append)
    lock.acquire()  # the same PID, now ended: taken over
    assert said == [f'{path}: taking over the lock of a run that ended without releasing it (host '
                    f'{socket.gethostname()}, PID {alive.pid}, started now); it is no longer running.']
    assert json.loads(path.read_text())['pid'] == os.getpid()
    lock.release()
    path.write_text(json.dumps(dict(host='node-elsewhere', pid=1, started='then')))
    with pytest.raises(WorkDirInUseError, match='host node-elsewhere, PID 1, started then'):
        WorkDirLock(str(tmp_path)).acquire()  # this host cannot tell whether it still runs


def test_a_flock_failure_other_than_missing_support_is_raised(tmp_path, monkeypatch):
    without_flock(monkeypatch, errno.EIO)
    with pytest.raises(OSError, match=os.strerror(errno.EIO)) as error:
        WorkDirLock(str(tmp_path)).acquire()
    assert error.value.errno == errno.EIO and not isinstance(error.value, WorkDirInUseError)


def test_a_lock_file_deleted_by_its_releasing_holder_meanwhile_is_not_the_one_held(tmp_path, monkeypatch):
    """The holder's release deletes the file between this run's open and its flock: the lock of that deleted file
    would guard nothing, so the file now at the path is locked instead."""
    import fcntl
    flock, opened = fcntl.flock, []

    def released_meanwhile(handle, operation):
        opened.append(os.fstat(handle.fileno()).st_ino)
        if len(opened) == 1:
            os.remove(tmp_path / LOCK_NAME)
        flock(handle, operation)

    monkeypatch.setattr(fcntl, 'flock', released_meanwhile)
    lock = WorkDirLock(str(tmp_path))
    lock.acquire()
    assert len(opened) == 2 and (tmp_path / LOCK_NAME).stat().st_ino == opened[1]
    assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == os.getpid()
    lock.release()


def test_release_copes_with_a_removed_lock_file_and_a_second_call(tmp_path):
    lock = WorkDirLock(str(tmp_path))
    lock.acquire()
    os.remove(tmp_path / LOCK_NAME)  # e.g. deleted by hand, as the message of a busy work dir suggests
    lock.release()
    assert not lock.held and not (tmp_path / LOCK_NAME).exists()
    lock.release()  # not held: nothing to do
    assert not lock.held and not (tmp_path / LOCK_NAME).exists()


def test_a_remote_work_dir_gets_no_lock(tmp_path):
    from mmmetaformer.engine.work_dir_lock import acquire_work_dir_lock
    assert acquire_work_dir_lock('s3://bucket/work_dirs/run') is None
    lock = acquire_work_dir_lock(str(tmp_path / 'local'))
    assert lock.held and (tmp_path / 'local' / LOCK_NAME).exists()
    lock.release()


def test_a_write_error_other_than_a_full_disk_removes_the_partial_file_and_is_raised_as_it_is(tmp_path, monkeypatch):
    fail_the_second_save(monkeypatch, errno.EIO, 'Input/output error')
    with pytest.raises(OSError, match='Input/output error') as error:
        toy_runner(tmp_path).train()
    assert error.type is OSError and error.value.errno == errno.EIO  # not a DiskFullError
    assert sorted(path.name for path in tmp_path.glob('*.pth*')) == ['epoch_1.pth']


def test_a_checkpoint_to_remote_storage_is_written_under_its_own_name(tmp_path, monkeypatch):
    """Remote storage (``s3://...``) has no rename: mmengine writes the checkpoint there directly, with no free
    space check of a local disk."""
    import shutil

    from mmengine.runner import Runner
    saved = []
    monkeypatch.setattr(Runner, 'save_checkpoint', lambda self, out_dir, filename, *args, **kwargs:
                        saved.append((out_dir, filename, kwargs)))
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: pytest.fail(f'checked the free space of {path}'))
    toy_runner(tmp_path).save_checkpoint('s3://bucket/work', 'epoch_1.pth', meta=dict(note='remote'))
    assert saved == [('s3://bucket/work', 'epoch_1.pth', dict(meta=dict(note='remote')))]
    assert not list(tmp_path.glob('*.pth*'))
