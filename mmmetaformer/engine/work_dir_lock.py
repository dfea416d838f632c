"""One training run per work dir: an exclusive lock on ``<work_dir>/run.lock``.

Two runs writing into one work dir would mix their checkpoints and logs without any file showing it. The first
process of a run (rank 0; all processes of one distributed run are one run) holds an ``fcntl.flock`` lock on the
file, which holds the host, PID and start time of the run. The kernel releases the lock when the process ends,
however it ends; a clean end also deletes the file. A file left behind by a killed run on the same host is taken
over, and the log says so; one left by a run on another host is not, since this host cannot tell whether that run
still goes on (the message says to delete it).
"""
import errno
import fcntl
import json
import os
import os.path as osp
import socket
import time
from typing import Callable, Optional

from ..errors import WorkDirInUseError

LOCK_NAME = 'run.lock'


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _describe(holder: dict) -> str:
    return (f'host {holder.get("host", "?")}, PID {holder.get("pid", "?")}, started {holder.get("started", "?")}')


def _read_holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class WorkDirLock:
    """The lock of one work dir, held from :meth:`acquire` to :meth:`release` (or the end of the process).

    Args:
        work_dir: the folder of the run's checkpoints and logs.
        log: where to say that the lock of a killed run was taken over (e.g. ``logger.warning``).
    """

    def __init__(self, work_dir: str, log: Callable[[str], None] = print) -> None:
        self.path = osp.join(work_dir, LOCK_NAME)
        self.log = log
        self._file = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`~mmmetaformer.errors.WorkDirInUseError` naming the run that holds
        it and what to do."""
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        while self._file is None:
            handle = open(self.path, 'a+')
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    raise WorkDirInUseError(self._busy_message(_read_holder(self.path))) from error
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # A file system without flock: the holder's PID decides, where this host can see it.
                holder = _read_holder(self.path)
                if holder and not self._dead_on_this_host(holder):
                    raise WorkDirInUseError(self._busy_message(holder)) from error
                handle = open(self.path, 'a+')
            # The file we locked may have been deleted by its holder's release meanwhile: lock the current one.
            if osp.exists(self.path) and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                self._file = handle
            else:
                handle.close()
        self._take_over(_read_holder(self.path))

    def _dead_on_this_host(self, holder: dict) -> bool:
        return holder.get('host') == socket.gethostname() and not _process_alive(int(holder.get('pid', -1)))

    def _take_over(self, previous: dict) -> None:
        if previous and previous.get('pid') != os.getpid():
            if previous.get('host') != socket.gethostname():
                self.release(delete=False)
                raise WorkDirInUseError(
                    f'{self.path} names a run on another host ({_describe(previous)}), which this host cannot see. '
                    f'If that run has ended (killed), delete {self.path} and start again; if it still runs, use '
                    f'another --work-dir.')
            self.log(f'{self.path}: taking over the lock of a run that ended without releasing it '
                     f'({_describe(previous)}); it is no longer running.')
        self._file.seek(0)
        self._file.truncate()
        json.dump(dict(host=socket.gethostname(), pid=os.getpid(),
                       started=time.strftime('%Y-%m-%d %H:%M:%S %Z')), self._file)
        self._file.flush()

    def _busy_message(self, holder: dict) -> str:
        who = _describe(holder) if holder else 'a run that is starting now'
        return (f'another training run uses the work dir {osp.dirname(self.path)} ({who}): two runs in one work dir '
                f'would mix their checkpoints. Wait for it to end, stop it, or give this run another --work-dir. '
                f'(If no such run exists, e.g. on a file system without working locks, delete {self.path}.)')

    def release(self, delete: bool = True) -> None:
        """Give the lock up; ``delete`` removes the file first (while still holding the lock, so that no other run
        locks a file about to disappear)."""
        if self._file is None:
            return
        if delete:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self._file.close()
        self._file = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._file is not None


def acquire_work_dir_lock(work_dir: str, log: Callable[[str], None] = print) -> Optional[WorkDirLock]:
    """The lock of ``work_dir`` taken (see :class:`WorkDirLock`); remote work dirs (``s3://...``) get none."""
    if '://' in work_dir:
        return None
    lock = WorkDirLock(work_dir, log)
    lock.acquire()
    return lock
