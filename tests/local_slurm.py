"""A one-node Slurm cluster (munged, slurmctld, slurmd) on this machine, in a temporary directory.

Everything it needs lives under its directory (configuration, munge key and socket, state, spool, logs) and it
listens on free ports, so it coexists with another Slurm on the same machine. It needs Debian's ``slurm-wlm`` and
``munge`` and root (slurmd starts the tasks as the submitting user).
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ('munged', 'slurmctld', 'slurmd')
PARTITION = 'cpu'
NODE = 'mmmf-node'


def missing_binaries() -> List[str]:
    """The daemons and clients of a local cluster that are not installed."""
    search_path = os.environ.get('PATH', '') + ':/usr/sbin:/sbin'
    return [name for name in DAEMONS + ('srun', 'scancel', 'squeue', 'sinfo', 'mungekey')
            if shutil.which(name, path=search_path) is None]


def _free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(('127.0.0.1', 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` is what Slurm's clients need (``SLURM_CONF``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.conf = self.directory / 'slurm.conf'
        self.munge_socket = self.directory / 'munge' / 'munge.socket'
        self.processes: Dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> Dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf), PATH=os.environ.get('PATH', '') + ':/usr/sbin')

    def _write_config(self) -> None:
        for sub in ('munge', 'state', 'spool', 'log'):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        ctld_port, slurmd_port = _free_ports(2)
        cpus = os.cpu_count() or 2
        # cred_expire is also how long a requeued job waits before it starts again (120 s by default), and
        # sched_interval how often the scheduler looks at pending jobs: both short so that a requeue takes seconds.
        self.conf.write_text(f"""\
ClusterName=mmmf{ctld_port}
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={self.directory / 'state'}
SlurmdSpoolDir={self.directory / 'spool'}
SlurmctldPidFile={self.directory / 'slurmctld.pid'}
SlurmdPidFile={self.directory / 'slurmd.pid'}
SlurmctldLogFile={self.directory / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.directory / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=30
MinJobAge=600
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        key = self.directory / 'munge' / 'munge.key'
        subprocess.run(['mungekey', '--create', '--keyfile', str(key)], check=True, env=self.env)
        key.chmod(0o400)
        self.directory.joinpath('munge').chmod(0o700)

    def _spawn(self, name: str, args: List[str]) -> None:
        log = open(self.directory / 'log' / f'{name}.out', 'w')
        self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        """Start the three daemons and wait until the node takes jobs."""
        self._write_config()
        munge = self.directory / 'munge'
        self._spawn('munged', ['munged', '--foreground', '--force', f'--socket={self.munge_socket}',
                               f'--key-file={munge / "munge.key"}', f'--pid-file={munge / "munged.pid"}',
                               f'--seed-file={munge / "munged.seed"}', f'--log-file={munge / "munged.log"}'])
        self._wait(lambda: self.munge_socket.exists(), timeout, 'munged')
        self._spawn('slurmctld', ['slurmctld', '-D', '-i', '-f', str(self.conf)])
        self._spawn('slurmd', ['slurmd', '-D', '-N', NODE, '-f', str(self.conf)])
        self._wait(self._node_is_idle, timeout, 'the node')

    def _node_is_idle(self) -> bool:
        state = subprocess.run(['sinfo', '-h', '-n', NODE, '-o', '%T'], capture_output=True, text=True, env=self.env)
        return state.stdout.strip() == 'idle'

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            exited = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if exited or time.time() > deadline:
                raise RuntimeError(f'local Slurm: {what} not ready (exited daemons: {exited}); logs:\n{self.logs()}')
            time.sleep(0.2)

    def logs(self) -> str:
        """The tails of the daemons' logs, for a failure message."""
        parts = []
        for path in sorted(self.directory.glob('log/*')) + [self.directory / 'munge' / 'munged.log']:
            if path.is_file():
                parts.append(f'--- {path.name}\n' + '\n'.join(path.read_text(errors='replace').splitlines()[-15:]))
        return '\n'.join(parts)

    def job_id(self, name: str) -> Optional[str]:
        """The id of the running or pending job called ``name``, if there is one."""
        listed = subprocess.run(['squeue', '-h', '-n', name, '-o', '%i'], capture_output=True, text=True,
                                env=self.env).stdout.split()
        return listed[0] if listed else None

    def stop(self) -> None:
        """Stop the daemons (slurmd and slurmctld first, munged last) and wait for them."""
        for name in reversed(DAEMONS):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
