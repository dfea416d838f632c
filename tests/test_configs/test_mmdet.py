"""Detection: published model sizes, and real end-to-end runs of the tools on tiny generated COCO-format data."""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from e2e import DET_TINY, RETINA_HEAD, build_config_model, free_port, logged_metric, run_tool, write_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

pytest.importorskip('mmdet')

# score_thr 0: a detector trained for a few iterations must still output boxes for the metric to score. At most 20
# detections per image and 128 sampled RoIs per training image (published: 100 and 512): the mask head's
# convolutions on every RoI are most of a CPU step (the train-and-test test: 64 s to 48 s).
MASK_HEADS = (', roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)), '
              'test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=20)), '
              'train_cfg=dict(rcnn=dict(sampler=dict(num=128)))')


@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 8), ('val', 4)))


@pytest.mark.parametrize('config, params', [
    ('retinanet_poolformer_s12_1x.py', 21.7), ('retinanet_poolformer_s24_1x.py', 31.1),
    ('retinanet_poolformer_s36_1x.py', 40.6), ('mask_rcnn_poolformer_s12_1x.py', 31.6),
    ('mask_rcnn_poolformer_s24_1x.py', 41.0), ('mask_rcnn_poolformer_s36_1x.py', 50.5)])
def test_published_detector_sizes(config, params):
    model = build_config_model(f'mmdet/{config}')
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params


def test_config_settings_are_the_published_ones():
    from mmengine.config import Config
    retina = Config.fromfile(osp.join(ROOT, 'configs/mmdet/retinanet_poolformer_s12_1x.py'))
    mask = Config.fromfile(osp.join(ROOT, 'configs/mmdet/mask_rcnn_poolformer_s12_1x.py'))
    assert retina.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert mask.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4)
    for cfg in (retina, mask):
        assert cfg.train_cfg.max_epochs == 12
        warmup, steps = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
        assert (steps.type, steps.milestones, steps.gamma) == ('MultiStepLR', [8, 11], 0.1)
        assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
        assert cfg.train_pipeline[2] == dict(type='Resize', scale=(1333, 800), keep_ratio=True)
        assert cfg.model.backbone.drop_path_rate == 0.0
        assert cfg.model.backbone.init_cfg.checkpoint.endswith('poolformer_s12.pth.tar')
    assert retina.model.backbone.out_indices == (1, 2, 3)
    assert retina.model.neck.add_extra_convs == 'on_input' and retina.model.neck.num_outs == 5
    assert mask.model.backbone.out_indices == (0, 1, 2, 3)


@pytest.mark.parametrize('family', ['poolformerv2_s12', 'convformer_s18', 'caformer_s18'])
def test_other_families_build(family):
    for detector in ('retinanet', 'mask_rcnn'):
        model = build_config_model(f'mmdet/{detector}_{family}_1x.py')
        assert type(model.backbone).__name__.lower() == family.split('_')[0]


@pytest.mark.slow
def test_retinanet_train_test_and_show(shapes, tmp_path):
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    work = tmp_path / 'work'
    run_tool(['tools/train.py', config, '--work-dir', str(work)])
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.exists()
    result = run_tool(['tools/test.py', config, str(checkpoint), '--work-dir', str(work),
                       '--out', str(tmp_path / 'results.pkl'), '--show-dir', str(tmp_path / 'show')])
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0
    assert (tmp_path / 'results.pkl').exists()
    assert glob.glob(str(tmp_path / 'show' / '**' / '*.jpg'), recursive=True)


def test_a_converted_official_retinanet_tests_with_the_config(shapes, tmp_path, tmp_ckpt):
    """The official PoolFormer RetinaNet files carry all four output norms (norm0 for a stride-4 output that their
    FPN ignores); converted, they test with our config, which has no stride-4 output."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from reference_impl import build_reference
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    init_default_scope('mmdet')
    detector = MODELS.build(Config.fromfile(config).model)
    official = {'backbone.' + k: v for k, v in build_reference('poolformer_s12').state_dict().items()
                if not k.startswith(('norm.', 'head.'))}
    for index, dim in zip((0, 2, 4, 6), (64, 128, 320, 512)):
        official[f'backbone.norm{index}.weight'], official[f'backbone.norm{index}.bias'] = torch.ones(dim), \
            torch.zeros(dim)
    official.update((k, v) for k, v in detector.state_dict().items() if not k.startswith('backbone.'))
    converted = str(tmp_path / 'retina_mm.pth')
    run_tool(['tools/convert_checkpoint.py', tmp_ckpt({'state_dict': official}, 'retina_official.pth'), converted])
    result = run_tool(['tools/test.py', config, converted, '--work-dir', str(tmp_path / 'work')])
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0


@pytest.mark.slow
def test_mask_rcnn_train_test(shapes, tmp_path):
    config = write_config(tmp_path / 'mask.py', 'mmdet/mask_rcnn_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=MASK_HEADS, mask=True, epochs=1))
    work = tmp_path / 'work'
    run_tool(['tools/train.py', config, '--work-dir', str(work)])
    result = run_tool(['tools/test.py', config, str(work / 'epoch_1.pth'), '--work-dir', str(work)])
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0
    assert 0.0 <= logged_metric(result, 'coco/segm_mAP') <= 1.0


@pytest.mark.slow
def test_dist_train_two_processes_on_cpu(shapes, tmp_path):
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    work = tmp_path / 'work'
    result = run_tool(['tools/dist_train.sh', config, '2', '--work-dir', str(work), '--auto-scale-lr'],
                      env={'PORT': free_port()})
    assert (work / 'epoch_1.pth').exists()
    assert 'Distributed launcher: pytorch' in result.stdout + result.stderr or 'world_size: 2' in \
        result.stdout + result.stderr
    # 2 processes of 2 images against the config's base batch of 16
    assert 'Scaling the original LR by 0.25' in result.stdout + result.stderr
    result = run_tool(['tools/dist_test.sh', config, str(work / 'epoch_1.pth'), '2', '--work-dir', str(work)],
                      env={'PORT': free_port()})
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0


def test_dist_scripts_name_their_arguments():
    for script, usage in (('dist_train.sh', 'CONFIG NUM_PROCESSES [train.py options]'),
                          ('dist_test.sh', 'CONFIG CHECKPOINT NUM_PROCESSES [test.py options]')):
        for args in ([], ['config.py', 'two']):
            result = subprocess.run(['bash', f'tools/{script}', *args], cwd=ROOT, capture_output=True, text=True)
            assert result.returncode == 2 and result.stderr == f'usage: tools/{script} {usage}\n', result.stderr


def packaged_mmdet_tool(name: str) -> str:
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.exists(path):
        pytest.skip('this mmdet build ships no tools/')
    return path


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['ours', 'mmdet'])
def test_sigkill_then_resume_loses_no_finished_epoch(shapes, tmp_path, tool):
    train = 'tools/train.py' if tool == 'ours' else packaged_mmdet_tool('train.py')
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=3))
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    process = subprocess.Popen([sys.executable, train, config, '--work-dir', str(work)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (work / 'epoch_1.pth').exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    # Killed as soon as the checkpoint is there, mostly before mmengine writes last_checkpoint.
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (work / 'epoch_1.pth').exists() and not (work / 'epoch_3.pth').exists()
    assert not list(work.glob('*.partial'))
    result = run_tool([train, config, '--work-dir', str(work), '--resume'])
    log = result.stdout + result.stderr
    assert 'resumed' in log.lower()
    assert 'Epoch(train)  [1]' not in log and 'Epoch(train) [1]' not in log  # epoch 1 not trained again
    assert (work / 'epoch_3.pth').exists()


def test_amp_training_has_finite_losses(shapes, tmp_path):
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    work = tmp_path / 'work'
    # Two iterations (the second runs on weights the first bf16 step updated) at 64x64: without bf16 instructions
    # the CPU computes bf16 convolutions and matrix products in slow generic kernels.
    result = run_tool(['tools/train.py', config, '--work-dir', str(work), '--amp', '--cfg-options',
                       'train_dataloader.dataset.indices=4', 'train_dataloader.dataset.pipeline.2.scale=(64,64)'])
    assert 'AutocastOptimWrapper' in result.stdout + result.stderr  # bf16 autocast on the CPU
    logs = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    losses = [json.loads(line)['loss'] for line in open(logs[0]) if '"loss"' in line]
    assert len(losses) == 2 and all(loss == loss and abs(loss) < 1e4 for loss in losses)


def test_missing_coco_stops_at_once_with_a_pointer_to_the_demo(tmp_path):
    result = subprocess.run([sys.executable, 'tools/train.py', 'configs/mmdet/retinanet_poolformer_s12_1x.py',
                             '--work-dir', str(tmp_path), '--cfg-options',
                             f'train_dataloader.dataset.data_root={tmp_path}/nowhere/'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode != 0
    assert 'nowhere/annotations/instances_train2017.json' in result.stderr
    assert 'tools/demo.py' in result.stderr


@pytest.mark.slow
def test_configs_run_unchanged_through_mmdets_packaged_tools(shapes, tmp_path):
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    work = tmp_path / 'work'
    run_tool([packaged_mmdet_tool('train.py'), config, '--work-dir', str(work)])
    result = run_tool([packaged_mmdet_tool('test.py'), config, str(work / 'epoch_1.pth'), '--work-dir', str(work)])
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_its_pictures(tmp_path):
    """The whole demo path on a cut-down run (its full default run is what reaches mAP >= 0.4), started elsewhere
    with relative paths, over a data set of other sizes left by an earlier run."""
    from mmmetaformer.testing import make_coco_shapes
    make_coco_shapes(str(tmp_path / 'data'), splits=(('train', 6), ('val', 2)))
    result = run_tool([osp.join(ROOT, 'tools', 'demo.py'), '--data-root', 'data', '--work-dir', 'work',
                       '--train-images', '16', '--val-images', '4', '--epochs', '1'], cwd=tmp_path)
    assert 'generating 16 training and 4 validation images' in result.stdout
    assert '[demo] done' in result.stdout and re.search(r'COCO bbox mAP [\d.]+.* on 4 held-out', result.stdout)
    work = tmp_path / 'work'
    assert (work / 'predictions.png').stat().st_size > 0 and (work / 'loss_curve.png').stat().st_size > 0


def test_backbone_weights_load_through_the_config_and_offline_urls_fail_clearly(shapes, tmp_path, tmp_ckpt):
    from reference_impl import build_reference
    official = tmp_ckpt(build_reference('poolformer_s12').state_dict(), 'poolformer_s12.pth.tar')
    # the tiny config sets init_cfg=None; put the published init_cfg back, once local and once the real URL
    body = DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1)
    body = body.replace('model = dict(backbone=dict(init_cfg=None)', 'model = dict(backbone=dict()')
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py', body)
    result = run_tool(['tools/train.py', config, '--work-dir', str(tmp_path / 'local'),
                       '--cfg-options', f'model.backbone.init_cfg.checkpoint={official}'])
    assert 'PoolFormer: loaded' in result.stdout + result.stderr and '(sail_v1 layout)' in result.stdout + result.stderr
    offline = subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', str(tmp_path / 'url')],
                             cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert offline.returncode != 0
    message = offline.stdout + offline.stderr
    assert 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s12.pth.tar' in message
    assert '--cfg-options model.backbone.init_cfg.checkpoint=/path/to/poolformer_s12.pth.tar' in message
