"""UperNet 160k on ADE20K (the MetaFormer-Baselines setup): published sizes from the configs, the settings, the
multi-scale + flip testing, and real runs of the tools on tiny generated ADE20K-layout data."""
import glob
import os.path as osp

import pytest

from conftest import ROOT
from e2e import assert_valid_miou, run_tool, tiny_seg_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

mmseg = pytest.importorskip('mmseg')

MMSEG_TOOLS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')  # mmseg's tools/, shipped inside the package
# MetaFormer Baselines (TPAMI), UperNet on ADE20K: params (M, rounded), MACs (G) at 512x2048.
PUBLISHED = [('convformer_s18', 54, 925), ('caformer_s18', 54, 1024), ('convformer_s36', 67, 1003),
             ('caformer_s36', 67, 1197), ('convformer_m36', 85, 1113), ('caformer_m36', 84, 1346)]
WIDTHS = {'s18': [64, 128, 320, 512], 's36': [64, 128, 320, 512], 'm36': [96, 192, 384, 576],
          'b36': [128, 256, 512, 768]}
MODELS = [f'{family}_{arch}' for family in ('convformer', 'caformer') for arch in WIDTHS]


def config_path(model: str) -> str:
    return osp.join(ROOT, 'configs', 'mmseg', f'upernet_{model}_160k_ade20k.py')


def load(model: str):
    from mmengine.config import Config
    return Config.fromfile(config_path(model))


@pytest.mark.parametrize('model, params, macs', PUBLISHED)
def test_published_sizes(model, params, macs):
    from mmmetaformer.utils.complexity import count_params_and_macs
    cost = count_params_and_macs(config_path(model), (512, 2048))
    assert round(cost.params / 1e6) == params
    assert abs(cost.macs / 1e9 - macs) / macs < 0.03, cost.macs / 1e9


def test_b36_is_built_the_same_way():
    from mmmetaformer.utils.complexity import count_params_and_macs
    for family, m36_params, m36_macs in (('convformer', 85e6, 1113e9), ('caformer', 84e6, 1346e9)):
        cfg = load(f'{family}_b36')
        assert cfg.model.decode_head.in_channels == WIDTHS['b36'] and cfg.model.auxiliary_head.in_channels == 512
        cost = count_params_and_macs(cfg)  # the mmseg default: 512x2048
        assert cost.params > m36_params + 40e6 and cost.macs > m36_macs  # the backbone alone grows by 43 M


def test_metafile_numbers_are_those_of_the_configs():
    """configs/mmseg/metafile.yml: exact parameters and MACs at 512x2048 (checked here for one Semantic FPN and one
    UperNet config), the published mIoU of the six published UperNet models."""
    import yaml

    from mmmetaformer.utils.complexity import count_params_and_macs
    entries = {m['Name']: m for m in yaml.safe_load(open(osp.join(ROOT, 'configs', 'mmseg', 'metafile.yml')))['Models']}
    for name in ('fpn_poolformer_s12_40k_ade20k', 'upernet_caformer_s18_160k_ade20k'):
        cost = count_params_and_macs(osp.join(ROOT, entries[name]['Config']), (512, 2048))
        assert (entries[name]['Metadata']['Parameters'], entries[name]['Metadata']['FLOPs']) == cost
    published = {name: entries[f'upernet_{name}_160k_ade20k']['Results'][0]['Metrics'] for name, _, _ in PUBLISHED}
    assert published['caformer_m36'] == {'mIoU': 51.7, 'mIoU(ms+flip)': 51.7}
    assert 'Results' not in entries['upernet_caformer_b36_160k_ade20k']


@pytest.mark.parametrize('model', MODELS)
def test_settings_are_the_published_ones(model):
    cfg = load(model)
    arch = model.split('_')[1]
    assert (cfg.train_cfg.type, cfg.train_cfg.max_iters) == ('IterBasedTrainLoop', 160000)
    assert dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75) in cfg.train_dataloader.dataset.pipeline
    assert cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16  # 8 GPUs x 2 images
    backbone, head, aux = cfg.model.backbone, cfg.model.decode_head, cfg.model.auxiliary_head
    assert backbone.type == f"mmmetaformer.{dict(convformer='ConvFormer', caformer='CAFormer')[model.split('_')[0]]}"
    assert backbone.arch == arch and backbone.out_indices == (0, 1, 2, 3) and backbone.norm_outputs
    assert backbone.drop_path_rate == dict(s18=0.3, s36=0.4, m36=0.5, b36=0.6)[arch]
    assert backbone.init_cfg.checkpoint == \
        f"https://huggingface.co/sail/dl/resolve/main/{model.split('_')[0]}/{model}.pth"
    assert (head.type, head.channels, head.pool_scales, head.in_channels) == \
        ('UPerHead', 512, (1, 2, 3, 6), WIDTHS[arch])
    assert (aux.type, aux.in_index, aux.channels, aux.loss_decode.loss_weight) == ('FCNHead', 2, 256, 0.4)
    assert aux.in_channels == WIDTHS[arch][2]
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert cfg.optim_wrapper.constructor == 'mmmetaformer.LayerDecayOptimizerConstructor'
    assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.95 if arch == 's18' else 0.975)
    assert cfg.param_scheduler == [
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
        dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000, by_epoch=False)]
    assert cfg.tta_model == dict(type='SegTTAModel') and cfg.tta_pipeline


def test_tta_pipeline_gives_six_scales_with_and_without_flip(tmp_path):
    """The published tta_pipeline on one 96x128 image: 0.5-1.75 x (2048, 512) (short side 256 ... 896), sides
    made multiples of 32, each unflipped and flipped."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from mmmetaformer.testing import make_ade20k_like
    root = make_ade20k_like(str(tmp_path), splits=(('validation', 1), ), size=(96, 128))
    cfg = load('caformer_s18')
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, data_root=root, pipeline=cfg.tta_pipeline))
    sample = dataset[0]
    shapes = [tuple(image.shape[1:]) for image in sample['inputs']]
    flips = [data_sample.flip for data_sample in sample['data_samples']]
    heights = [256, 384, 512, 640, 768, 896]
    assert sorted(shapes) == sorted((h, -(-h * 4 // 3 // 32) * 32) for h in heights for _ in range(2))
    assert sorted(flips) == [False] * 6 + [True] * 6


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ade(module_tmp_factory) -> str:
    from mmmetaformer.testing import make_ade20k_like
    return make_ade20k_like(str(module_tmp_factory.mktemp('ade')), splits=(('training', 4), ('validation', 2)))


@pytest.fixture(scope='module')
def trained(ade, module_tmp_factory):
    """UperNet-CAFormer-S18 trained 2 iterations by tools/train.py: (config, work dir)."""
    tmp_path = module_tmp_factory.mktemp('upernet')
    config = tiny_seg_config(tmp_path, ade, 'upernet_caformer_s18_160k_ade20k')
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work)])
    assert 'LayerDecayOptimizerConstructor: 20 layer ids' in result.stdout + result.stderr
    assert 'Iter(val) [2/2]' in result.stdout + result.stderr
    return config, work


def test_tools_test(trained):
    config, work = trained
    assert_valid_miou(run_tool(['tools/test.py', config, str(work / 'iter_2.pth'), '--work-dir', str(work)]))


def test_tools_test_tta(trained, tmp_path):
    config, work = trained
    result = run_tool(['tools/test.py', config, str(work / 'iter_2.pth'), '--tta', '--work-dir', str(tmp_path)])
    assert_valid_miou(result)
    assert 'do not match exactly' not in result.stdout + result.stderr  # mmengine loaded every tensor
    dumped = open(glob.glob(str(tmp_path / '*.py'))[0]).read()  # the config the runner ran
    assert "type='SegTTAModel'" in dumped and "type='TestTimeAug'" in dumped
