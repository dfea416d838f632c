"""Helpers shared by the test modules: models built from the configs, random checkpoints, derived configs on tiny
generated data, running the tools and reading what they logged and wrote."""
import contextlib
import glob
import io
import os
import os.path as osp
import re
import runpy
import socket
import subprocess
import sys
import time
from typing import List

from conftest import ROOT


def rel_err(a, b) -> float:
    """The relative error of tensor ``a`` against ``b`` (norm of the difference over the norm of ``b``)."""
    return ((a - b).norm() / b.norm()).item()


def load_cfg(path: str, options: dict = None):
    """A config of the repository's configs/ (or an absolute path) with ``options`` merged in."""
    from mmengine.config import Config
    cfg = Config.fromfile(path if osp.isabs(path) else osp.join(ROOT, 'configs', path))
    cfg.merge_from_dict(options or {})
    return cfg


def build_config_model(config: str):
    """The model of ``configs/<config>`` (e.g. ``'mmdet/retinanet_poolformer_s12_1x.py'``), built in its library's
    scope with random weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmmetaformer  # noqa: F401
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', config))
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def save_random_checkpoint(config: str, path: str, classes=None) -> str:
    """The model of ``config`` as built (random weights), saved as an mm checkpoint with its class names."""
    import torch

    from mmmetaformer.apis.inference import build_inferencer
    model = build_inferencer(config, None, 'cpu').model
    meta = dict(dataset_meta=dict(classes=classes)) if classes else {}
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


# A PoolFormer arch of one block per stage and narrow stages, for a config's ``model.backbone.arch`` (replacing its
# named arch): whole mm models that build and run in a fraction of a second where the backbone's size does not matter.
TINY_POOLFORMER_ARCH = dict(_delete_=True, depths=[1, 1, 1, 1], dims=[8, 16, 24, 32],
                            token_mixers=dict(type='Pooling', pool_size=3),
                            norm_cfg=dict(type='ModifiedLayerNorm', bias=True, eps=1e-5))
EXPORT_DETECTOR_OPTIONS = {'model.backbone.init_cfg': None, 'model.test_cfg.rpn.max_per_img': 100}
# The exported kinds (tests/test_export/test_shapes.py, tests/gpu/test_onnx_cuda.py): config, options, exported
# H x W, second H x W for dynamic exports.
EXPORT_KINDS = {
    'classifier': ('mmpretrain/poolformer_s12_in1k.py', {}, (64, 64), (96, 32)),
    'segmentor': ('mmseg/fpn_poolformer_s12_40k_ade20k.py', {'model.backbone.init_cfg': None}, (64, 64), (96, 32)),
    # random weights score high: a threshold that still leaves many detections
    'retinanet': ('mmdet/retinanet_poolformer_s12_1x.py',
                  {'model.backbone.init_cfg': None, 'model.test_cfg.score_thr': 0.99}, (128, 128), (160, 96)),
    'mask_rcnn': ('mmdet/mask_rcnn_poolformer_s12_1x.py', EXPORT_DETECTOR_OPTIONS, (128, 128), (160, 96)),
    'faster_rcnn': ('mmdet/mask_rcnn_poolformer_s12_1x.py',
                    dict(EXPORT_DETECTOR_OPTIONS, **{'model.roi_head.mask_roi_extractor': None,
                                                     'model.roi_head.mask_head': None}), (128, 128), (160, 96)),
}


def build_export_kind(kind: str):
    """The config and model (random weights, seed 0) of one of :data:`EXPORT_KINDS`."""
    import torch

    from mmmetaformer.export.exporter import build_model
    config, options, _, _ = EXPORT_KINDS[kind]
    cfg = load_cfg(config, options)
    torch.manual_seed(0)
    model = build_model(cfg)
    if kind.endswith('rcnn'):  # spread the box head's scores above score_thr (random ones are about 1/81 each)
        with torch.no_grad():
            model.roi_head.bbox_head.fc_cls.weight.mul_(10.0)
            model.roi_head.bbox_head.fc_cls.bias.normal_(0, 2.0)
    return cfg, model


def free_port() -> str:
    """A TCP port nobody listens on now, for a torchrun rendezvous (a fixed one may be taken or in TIME_WAIT)."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return str(probe.getsockname()[1])


def write_config(path, base: str, body: str) -> str:
    """A config inheriting ``base`` (relative to the repository's configs/) with ``body`` appended."""
    path.write_text(f"_base_ = '{os.path.join(ROOT, 'configs', base)}'\n{body}")
    return str(path)


def run_tool(args: List[str], timeout: int = 900, env=None, cwd=ROOT) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` (or a shell script) and fail with its output if it fails."""
    command = args if args[0].endswith('.sh') else [sys.executable] + args
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=tool_env(env))
    assert result.returncode == 0, f'{" ".join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}'
    return result


# A 3-class RetinaNet head for the generated shapes data set.
RETINA_HEAD = ', bbox_head=dict(num_classes=3), test_cfg=dict(score_thr=0.0)'
DET_TINY = """
data_root = '{root}/'
metainfo = dict(classes=('square', 'circle', 'triangle'))
model = dict(backbone=dict(init_cfg=None){model_extra})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
    data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5)]
default_hooks = dict(logger=dict(interval=1))
"""


# Segmentation: 64x64 crops, 2 iterations then validation; no pretrained weights (no network in the tests).
SEG_TINY = """
data_root = '{root}'
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size), backbone=dict(init_cfg=None))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline={train_pipeline}))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline={test_pipeline}))
test_dataloader = val_dataloader
tta_pipeline = {tta_pipeline}
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""


def tiny_ade_pipelines() -> dict:
    """The published ADE20K pipelines (train, test, tta), every step kept, with scales and crops made 16x smaller
    in width and 8x in height (the test scale (2048, 512) becomes (128, 64)) for the generated images."""
    from mmengine.config import Config
    base = Config.fromfile(osp.join(ROOT, 'configs', 'mmseg', '_base_', 'ade20k.py')).to_dict()

    def shrink(item):
        if isinstance(item, list):
            return [shrink(x) for x in item]
        if not isinstance(item, dict):
            return item
        item = {key: shrink(value) for key, value in item.items()}
        if 'scale' in item:
            item['scale'] = (item['scale'][0] // 16, item['scale'][1] // 8)
        if 'crop_size' in item:
            item['crop_size'] = (64, 64)
        return item
    return {name: shrink(base[name]) for name in ('train_pipeline', 'test_pipeline', 'tta_pipeline')}


def tiny_seg_config(tmp_path, ade: str, config: str) -> str:
    """The mmseg config ``config`` (e.g. 'fpn_poolformer_s12_40k_ade20k') on the tiny data set at ``ade``."""
    body = SEG_TINY.format(root=ade, **tiny_ade_pipelines())
    return write_config(tmp_path / f'{config}.py', f'mmseg/{config}.py', body)


def logged_metric(result: subprocess.CompletedProcess, name: str) -> float:
    """The last value of the metric ``name`` (e.g. ``'coco/bbox_mAP'``, ``'mIoU'``, ``'accuracy/top1'``) that a run
    of a tool logged."""
    found = re.findall(rf'{re.escape(name)}: (-?\d+(?:\.\d+)?)', result.stdout + result.stderr)
    assert found, f'no {name} in the output:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}'
    return float(found[-1])


def assert_valid_miou(result: subprocess.CompletedProcess) -> None:
    """The test run logged an mIoU, a percentage."""
    assert 0.0 <= logged_metric(result, 'mIoU') <= 100.0


# Two epochs of the tiny RetinaNet with a fixed seed, logged every iteration, validated only by the test tools.
PREEMPTIBLE_RUN = """
randomness = dict(seed=0)
train_cfg = dict(max_epochs=2, val_interval=3)
"""


def preemptible_config(tmp_path, shapes: str) -> str:
    body = DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=2) + PREEMPTIBLE_RUN
    return write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py', body)


def run_tool_here(args: List[str], status: int = 0) -> str:
    """Run ``tools/<args>`` in this process, as ``python tools/<args>`` runs it, and return what it printed (with the
    message of a ``sys.exit(message)``, which Python prints on stderr and ends with status 1); fails unless it ends
    with exit status ``status``. Cheaper than :func:`run_tool` where a fresh process is not the point."""
    import torch
    printed = io.StringIO()
    saved, threads = sys.argv, torch.get_num_threads()  # tools set the thread count (--threads)
    sys.argv = [os.path.join(ROOT, args[0]), *args[1:]]
    ended = 0
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(sys.argv[0], run_name='__main__')
    except SystemExit as stop:
        if isinstance(stop.code, str):
            printed.write(stop.code + '\n')
        ended = 1 if isinstance(stop.code, str) else stop.code or 0
    finally:
        sys.argv = saved
        torch.set_num_threads(threads)
    assert ended == status, f'{" ".join(args)} ended with {ended}:\n' + printed.getvalue()[-6000:]
    return printed.getvalue()


def tool_env(env=None) -> dict:
    """The environment ``run_tool`` gives the tools."""
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHON=sys.executable, **(env or {}))


def start_tool(args: List[str], log, env=None, new_session: bool = False) -> subprocess.Popen:
    """Start ``python tools/<args>`` (or a shell script) in the background, its output going to the file ``log``; with
    ``new_session`` as the leader of a process group of its own (with its children: ``os.killpg`` signals them all)."""
    command = args if args[0].endswith('.sh') else [sys.executable] + args
    with open(log, 'w') as output:
        return subprocess.Popen(command, cwd=ROOT, env=tool_env(env), stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=new_session)


def wait_for_line(log, pattern: str, process: subprocess.Popen = None, timeout: float = 300) -> None:
    """Wait until the file ``log`` has a line matching ``pattern`` (fail if ``process`` ends first)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if osp.exists(log) and re.search(pattern, open(log, errors='replace').read(), re.MULTILINE):
            return
        assert process is None or process.poll() is None, f'ended before "{pattern}":\n{open(log).read()[-6000:]}'
        time.sleep(0.05)
    raise AssertionError(f'no "{pattern}" in {log} after {timeout} s')


def logged_losses(work_dir) -> List[tuple]:
    """(iteration, loss) of every logged training iteration of every run in ``work_dir``, in the order written."""
    import json
    rows = []
    for scalars in sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        rows += [(entry['step'], entry['loss']) for entry in map(json.loads, open(scalars)) if 'loss' in entry]
    return rows


def checkpoint_meta(path) -> dict:
    import torch
    return torch.load(path, map_location='cpu', weights_only=False)['meta']


def assert_same_weights(first, second) -> None:
    import torch
    a, b = (torch.load(p, map_location='cpu', weights_only=False)['state_dict'] for p in (first, second))
    assert a.keys() == b.keys()
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, f'{len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}'


# The log line of the first training iteration: the signals of the pre-emption tests come while the second runs.
FIRST_ITERATION = r'Epoch\(train\) +\[1\]\[ *1/'


def assert_stopped_mid_epoch(work_dir, iterations_per_epoch: int) -> int:
    """The work dir holds one complete pre-emption checkpoint, written inside an epoch; returns its iteration."""
    written = glob.glob(osp.join(str(work_dir), 'iter_*.pth'))
    assert len(written) == 1 and not glob.glob(osp.join(str(work_dir), '*.partial')), written
    meta = checkpoint_meta(written[0])
    assert meta['preemption']['signal'] == 'SIGTERM'
    assert meta['iter'] % iterations_per_epoch, f'stopped at the end of an epoch (iteration {meta["iter"]})'
    assert osp.basename(written[0]) == f'iter_{meta["iter"]}.pth'
    return meta['iter']
