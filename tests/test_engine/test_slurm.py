"""tools/slurm_train.sh and tools/slurm_test.sh against a real Slurm: a one-node cluster started on this machine for
these tests (tests/local_slurm.py). Skipped where Slurm is not installed, unless MMMETAFORMER_REQUIRE_SLURM=1."""
import os
import re
import subprocess
import time

import pytest
from local_slurm import PARTITION, LocalSlurm, missing_binaries

from conftest import ROOT
from e2e import (
    FIRST_ITERATION,
    assert_same_weights,
    assert_stopped_mid_epoch,
    checkpoint_meta,
    logged_losses,
    preemptible_config,
    run_tool,
    tool_env,
    wait_for_line,
)

pytest.importorskip('mmdet')
pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def slurm(module_tmp_factory):
    missing = missing_binaries()
    reason = (f'Slurm is not installed (missing: {", ".join(missing)}; Debian: apt-get install slurm-wlm munge)'
              if missing else 'a local slurmd needs root' if os.geteuid() != 0 else None)
    if reason:
        if os.environ.get('MMMETAFORMER_REQUIRE_SLURM') == '1':
            pytest.fail(f'{reason}, and MMMETAFORMER_REQUIRE_SLURM=1 requires the Slurm tests')
        pytest.skip(reason)
    cluster = LocalSlurm(module_tmp_factory.mktemp('slurm'))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    """24 training images: 6 iterations per epoch for two tasks of 2 images (about 1.2 s each), so that a signal
    sent once the first is logged has four iterations to arrive before the epoch ends."""
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 24), ('val', 4)))


def job_field(slurm: LocalSlurm, job: str, field: str) -> str:
    shown = subprocess.run(['scontrol', 'show', 'job', '--oneliner', job], capture_output=True, text=True,
                           env=slurm.env, check=True).stdout
    return re.search(rf'\b{field}=(\S+)', shown).group(1)


def wait_until_ended(slurm: LocalSlurm, job: str, restarts: int, timeout: float = 300) -> str:
    """The final state of ``job`` after its ``restarts``-th requeue."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_field(slurm, job, 'JobState')
        if int(job_field(slurm, job, 'Restarts')) == restarts and state not in ('PENDING', 'RUNNING', 'COMPLETING',
                                                                               'CONFIGURING', 'REQUEUED'):
            return state
        time.sleep(0.2)
    raise AssertionError(f'job {job} still {state} after {timeout} s')


def test_preempted_and_requeued_slurm_job_matches_an_uninterrupted_one(slurm, shapes, tmp_path):
    config = preemptible_config(tmp_path, shapes)
    env = dict(SLURM_CONF=str(slurm.conf), GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1')
    reference, work, log = tmp_path / 'reference', tmp_path / 'work', tmp_path / 'train.log'
    output = run_tool(['tools/slurm_train.sh', PARTITION, 'reference', config, str(reference)], env=env)
    assert 'Distributed launcher: slurm' in output.stdout + output.stderr
    assert checkpoint_meta(reference / 'epoch_2.pth')['iter'] == 12  # 24 images in batches of 2 on each of 2 tasks

    # A batch job that Slurm may requeue, signalled as pre-emption or a time limit signals it.
    submitted = subprocess.run(['sbatch', '--parsable', '--requeue', '-p', PARTITION, '-n', '2', '-J', 'retina',
                                '-o', str(log), '--open-mode=append',
                                '--wrap', f'tools/slurm_train.sh {PARTITION} retina {config} {work}'],
                               cwd=ROOT, env=tool_env(env), capture_output=True, text=True, check=True)
    job = submitted.stdout.strip().split(';')[0]
    wait_for_line(log, FIRST_ITERATION)
    subprocess.run(['scancel', '--signal=TERM', job], env=slurm.env, check=True)
    assert wait_until_ended(slurm, job, restarts=0) == 'FAILED', log.read_text()[-6000:]
    assert 'exiting with status 143' in log.read_text()
    stopped = assert_stopped_mid_epoch(work, iterations_per_epoch=6)

    subprocess.run(['scontrol', 'requeue', job], env=slurm.env, check=True)
    assert wait_until_ended(slurm, job, restarts=1) == 'COMPLETED', log.read_text()[-6000:]
    requeued = log.read_text()
    assert 'Resuming from' in requeued and f'its first {stopped % 6} batches' in requeued
    assert checkpoint_meta(work / 'epoch_2.pth')['iter'] == 12
    assert_same_weights(reference / 'epoch_2.pth', work / 'epoch_2.pth')
    assert logged_losses(work) == logged_losses(reference)

    tested = run_tool(['tools/slurm_test.sh', PARTITION, 'test', config, str(work / 'epoch_2.pth')], env=env)
    assert 'coco/bbox_mAP' in tested.stdout + tested.stderr
