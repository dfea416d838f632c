"""Helpers of the command-line tools: config overrides, data checks, CPU distributed runs, user errors as one-line
messages."""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional

import torch
from mmengine.config import Config, ConfigDict

from ..errors import InvalidSettingError, MissingFileError, UserError
from .configs import leaf_datasets
from .distributed import finish_distributed


def missing_data(cfg: Config, splits: List[str]) -> List[str]:
    """Paths a config's dataloaders need that do not exist (data root, annotation files, image folders)."""
    missing = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in leaf_datasets(loader.get('dataset')):
            root = dataset.get('data_root') or ''
            paths = []
            if dataset.get('ann_file'):
                paths.append(osp.join(root, dataset['ann_file']))
            prefix = dataset.get('data_prefix') or {}
            if isinstance(prefix, str):
                prefix = dict(img=prefix)
            paths += [osp.join(root, p) for p in prefix.values() if isinstance(p, str) and p]
            if root and not paths:
                paths.append(root)
            missing += [p for p in paths if not osp.exists(p) and p not in missing]
    return missing


def require_data(cfg: Config, splits: List[str]) -> None:
    """Raise :class:`~mmmetaformer.errors.MissingFileError`, saying where the data is expected and how to get
    started, if the data of ``splits`` is not there."""
    missing = missing_data(cfg, splits)
    if not missing:
        return
    scope = cfg.get('default_scope', '')
    hint = {
        'mmdet': 'COCO 2017 is expected as data/coco/{annotations,train2017,val2017}. To try the whole pipeline '
                 'without COCO, run `python tools/demo.py`: it generates a small COCO-format data set and trains '
                 'RetinaNet-PoolFormer-S12 on it in minutes.',
        'mmseg': 'ADE20K is expected as data/ade/ADEChallengeData2016/{images,annotations}/{training,validation}.',
        'mmpretrain': 'ImageNet-1K is expected as data/imagenet/{train,val} class folders or with meta/train.txt, '
                      'meta/val.txt.',
    }.get(scope, '')
    listed = '\n  '.join(missing)
    raise MissingFileError(f'the data set of this config is not where it expects it; missing:\n  {listed}\n'
                           f'{hint}\nData elsewhere: the overrides of every loader and evaluator are in '
                           'docs/en/user_guides/data.md, "Data outside data/".')


def set_slurm_rendezvous() -> None:
    """torch's ``env://`` variables of an srun task, from Slurm's: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, and
    unless already set ``MASTER_ADDR`` (the address Slurm has for the step's first node) and ``MASTER_PORT`` (20000
    + the job id modulo 10000, so that jobs sharing a node do not collide; a requeued job keeps its id)."""
    os.environ.update(RANK=os.environ['SLURM_PROCID'], LOCAL_RANK=os.environ['SLURM_LOCALID'],
                      WORLD_SIZE=os.environ.get('SLURM_STEP_NUM_TASKS', os.environ['SLURM_NTASKS']))
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_STEP_NODELIST', os.environ['SLURM_NODELIST'])
        first = subprocess.run(['scontrol', 'show', 'hostnames', nodes], capture_output=True, text=True,
                               check=True).stdout.split()[0]
        node = subprocess.run(['scontrol', 'show', 'node', '--oneliner', first], capture_output=True, text=True,
                              check=True).stdout
        os.environ['MASTER_ADDR'] = re.search(r'\bNodeAddr=(\S+)', node).group(1)
    os.environ.setdefault('MASTER_PORT', str(20000 + int(os.environ['SLURM_JOB_ID']) % 10000))


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` and ``--launcher slurm`` work on machines without GPUs.

    mmengine's launchers bind each rank to a CUDA device and wrap the model with ``device_ids``; without CUDA we
    start the process group ourselves with gloo (mmengine then skips its own set-up) and wrap the model with
    :class:`~mmmetaformer.engine.CPUDistributedDataParallel` (device-less, SyncBN reverted to BatchNorm).
    """
    if launcher == 'slurm':
        set_slurm_rendezvous()
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='mmmetaformer.CPUDistributedDataParallel',
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))


def enable_amp(cfg: Config) -> None:
    """Mixed precision: fp16 with dynamic loss scaling on GPU, bf16 on CPU."""
    optim_wrapper = cfg.optim_wrapper
    chosen = optim_wrapper.get('type', 'OptimWrapper')
    if chosen not in ('OptimWrapper', 'mmengine.OptimWrapper'):
        print(f'--amp: the config already chose the optimizer wrapper {chosen}; it is kept as it is.', flush=True)
        return
    if torch.cuda.is_available():
        optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')
    else:
        optim_wrapper.update(type='mmmetaformer.AutocastOptimWrapper', dtype='bfloat16')


def set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    """``--work-dir`` > the config's ``work_dir`` > ./work_dirs/<config name> (the mm convention)."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options KEY=VALUE ...``: settings merged into the config (mmengine's ``DictAction``), in every tool
    that loads a config."""
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.init_cfg.checkpoint=/path.pth or '
                        'test_dataloader.dataset.pipeline.1.scale=(640,640)')


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    """The options of every tool that :func:`load_config` applies, besides ``config`` and ``--work-dir``."""
    add_cfg_options(parser)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int)
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model\'s forward pass (mmengine\'s compile setting; another backend '
                        'than inductor with --cfg-options compile.backend=NAME)')


def load_config(args: argparse.Namespace) -> Config:
    """The config of a tool run, with the options every tool shares (``config``, ``cfg_options``, ``launcher``,
    ``work_dir``, ``local_rank``, ``compile``) applied."""
    if args.local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)  # older launchers pass --local_rank
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.compile and not cfg.get('compile'):
        cfg.compile = True
    set_work_dir(cfg, args.config, args.work_dir)
    return cfg


def enable_tta(cfg: Config) -> None:
    """``--tta``: test with the config's ``tta_pipeline`` and its ``tta_model`` wrapped around the model, as mm's own
    test tools do (the mmseg configs: 6 scales x 2 flips, see configs/mmseg/_base_/ade20k.py)."""
    missing = [key for key in ('tta_pipeline', 'tta_model') if not cfg.get(key)]
    if missing:
        raise InvalidSettingError(f'--tta needs {" and ".join(missing)} in the config, which it does not define '
                                  f'(every configs/mmseg config has both); add them or test without --tta')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """End the tool with ``error: <message>`` when the block raises a :class:`~mmmetaformer.errors.UserError` (a
    missing file, a setting that cannot work, the start-up checks refusing a run on every process), after ending a
    distributed run cleanly. Any other exception keeps its traceback."""
    try:
        yield
    except UserError as error:
        finish_distributed()
        sys.exit(f'error: {error}')


def run_checked(run: Callable[[], Any]) -> Any:
    """Run ``runner.train`` or ``runner.test``, ending with a one-line message on a user error (e.g. the runner's
    start-up checks refusing the run)."""
    with exit_on_user_error():
        return run()


def build_runner(cfg: Config):
    """Prepare CPU distributed runs and build the runner."""
    from mmengine.registry import RUNNERS
    setup_cpu_distributed(cfg, cfg.launcher)
    cfg.setdefault('runner_type', 'mmmetaformer.CrashSafeRunner')
    return RUNNERS.build(cfg)
