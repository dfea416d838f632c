"""Segmentation: published Semantic FPN sizes and settings, and real end-to-end runs of the tools (ours and mmseg's
own) on tiny generated ADE20K-layout data."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import ROOT
from e2e import assert_valid_miou, build_config_model, free_port, run_tool, tiny_seg_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

mmseg = pytest.importorskip('mmseg')

MMSEG_TOOLS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')  # mmseg's tools/, shipped inside the package
IMAGE_SIZE = (96, 128)  # (height, width) of the generated images
POOLFORMER_SIZES = [('s12', 15.7), ('s24', 25.1), ('s36', 34.6), ('m36', 59.8), ('m48', 77.1)]
OTHER_FAMILIES = ['poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18', 'caformer_s18']

@pytest.fixture(scope='module')
def ade(module_tmp_factory) -> str:
    from mmmetaformer.testing import make_ade20k_like
    return make_ade20k_like(str(module_tmp_factory.mktemp('ade')), splits=(('training', 4), ('validation', 2)),
                            size=IMAGE_SIZE)


def tiny_config(tmp_path, ade: str, model: str = 'poolformer_s12') -> str:
    """The published Semantic FPN config of ``model`` on the tiny data set, written under ``tmp_path``."""
    return tiny_seg_config(tmp_path, ade, f'fpn_{model}_40k_ade20k')


def assert_fpn_features(model) -> None:
    """The neck takes the backbone's four stage widths and gives 256-channel maps at strides 4, 8, 16, 32."""
    model.eval()
    with torch.no_grad():
        features = model.extract_feat(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(1, 256, 16, 24), (1, 256, 8, 12), (1, 256, 4, 6), (1, 256, 2, 3)]


def assert_overlays(show_dir) -> None:
    """One picture per validation image: ground truth and prediction side by side on the original image."""
    pictures = glob.glob(osp.join(str(show_dir), '**', 'vis_image', '*.png'), recursive=True)
    assert len(pictures) == 2, pictures
    height, width = IMAGE_SIZE
    assert all(Image.open(p).size == (2 * width, height) for p in pictures)


@pytest.mark.parametrize('arch, params', POOLFORMER_SIZES)
def test_published_segmentor_sizes(arch, params):
    model = build_config_model(f'mmseg/fpn_poolformer_{arch}_40k_ade20k.py')
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params
    assert_fpn_features(model)


@pytest.mark.parametrize('family', OTHER_FAMILIES)
def test_other_families_build(family):
    model = build_config_model(f'mmseg/fpn_{family}_40k_ade20k.py')
    assert type(model.backbone).__name__.lower() == family.split('_')[0]
    assert_fpn_features(model)


def test_config_settings_are_the_published_ones():
    from mmengine.config import Config
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', 'mmseg', 'fpn_*_40k_ade20k.py')))
    assert len(configs) == len(POOLFORMER_SIZES) + len(OTHER_FAMILIES)
    for path in configs:
        cfg = Config.fromfile(path)
        assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4)
        assert cfg.param_scheduler == [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
        assert (cfg.train_cfg.type, cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == \
            ('IterBasedTrainLoop', 40000, 4000)
        assert cfg.default_hooks.checkpoint.interval == 4000
        assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 32
        train, test = cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline
        assert dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True) in train
        assert dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75) in train
        assert cfg.model.data_preprocessor.size == (512, 512)
        assert test[1:3] == [dict(type='Resize', scale=(2048, 512), keep_ratio=True),
                             dict(type='ResizeToMultiple', size_divisor=32)]
        for pipeline in (train, test):
            assert dict(type='LoadAnnotations', reduce_zero_label=True) in pipeline
        assert cfg.model.neck.out_channels == 256 and cfg.model.decode_head.channels == 128
        assert cfg.model.decode_head.num_classes == 150
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'  # GPU runs keep SyncBN; CPU runs revert it
        assert cfg.model.backbone.drop_path_rate == 0.0 and cfg.model.backbone.norm_outputs
        widths = [96, 192, 384, 768] if '_m' in osp.basename(path) else [64, 128, 320, 512]
        assert cfg.model.neck.in_channels == widths


def test_train_test_and_show(ade, tmp_path):
    config = tiny_config(tmp_path, ade)
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work)])
    assert 'Iter(val) [2/2]' in result.stdout + result.stderr
    result = run_tool(['tools/test.py', config, str(work / 'iter_2.pth'), '--work-dir', str(work),
                       '--show-dir', str(tmp_path / 'show')])
    assert_valid_miou(result)
    assert_overlays(tmp_path / 'show')


@pytest.mark.skipif(not osp.isfile(osp.join(MMSEG_TOOLS, 'train.py')), reason='mmseg ships no tools/ in its package')
@pytest.mark.parametrize('config', ['fpn_poolformer_s12_40k_ade20k', 'upernet_caformer_s18_160k_ade20k'])
def test_mmseg_own_tools(ade, tmp_path, config):
    config = tiny_seg_config(tmp_path, ade, config)  # custom_imports brings mmmetaformer in
    work = tmp_path / 'work'
    run_tool([osp.join(MMSEG_TOOLS, 'train.py'), config, '--work-dir', str(work)], cwd=str(tmp_path))
    result = run_tool([osp.join(MMSEG_TOOLS, 'test.py'), config, str(work / 'iter_2.pth'), '--work-dir', str(work),
                       '--show-dir', str(tmp_path / 'show')], cwd=str(tmp_path))
    assert_valid_miou(result)
    assert_overlays(tmp_path / 'show')


def test_randformer_trains_at_other_grids(ade, tmp_path):
    # 64x64 crops give 4x4 and 2x2 grids (not RandFormer's 14x14, 7x7); validation at 64x96 gives 4x6 and 2x3.
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', tiny_config(tmp_path, ade, 'randformer_s12'), '--work-dir', str(work)])
    assert re.search(r'Iter\(val\) \[2/2\].*mIoU: \d', result.stdout + result.stderr)
    scalars = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    losses = [json.loads(line)['loss'] for line in open(scalars[0]) if '"loss"' in line]
    assert len(losses) == 2 and all(loss == loss and abs(loss) < 1e4 for loss in losses)


def test_dist_train_two_processes_on_cpu_reverts_syncbn(ade, tmp_path):
    work = tmp_path / 'work'
    result = run_tool(['tools/dist_train.sh', tiny_config(tmp_path, ade), '2', '--work-dir', str(work)],
                      env={'PORT': free_port()})
    assert 'SyncBN needs GPUs' in result.stdout + result.stderr
    assert (work / 'iter_2.pth').exists()


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_missing_ade20k_stops_at_once(tool, tmp_path):
    # Run from an empty folder: the published config's relative data/ade/... is not there.
    checkpoint = tmp_path / 'model.pth'
    checkpoint.touch()
    args = [osp.join(ROOT, 'tools', tool), osp.join(ROOT, 'configs/mmseg/fpn_poolformer_s12_40k_ade20k.py')]
    args += [str(checkpoint)] if tool == 'test.py' else []
    result = subprocess.run([sys.executable] + args + ['--work-dir', str(tmp_path / 'work')], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert result.returncode != 0
    split = 'training' if tool == 'train.py' else 'validation'
    assert f'data/ade/ADEChallengeData2016/images/{split}' in result.stderr
    assert 'ADE20K is expected as data/ade/ADEChallengeData2016' in result.stderr
    assert not (tmp_path / 'work').exists()  # stopped before the runner was built
