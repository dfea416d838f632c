"""UperNet 160k on ADE20K (the MetaFormer-Baselines setup): published sizes from the configs, the settings, the
layer-wise lr decay groups, multi-scale + flip testing, and real runs of the tools (ours and mmseg's own) on tiny
generated ADE20K-layout data."""
import glob
import os.path as osp

import pytest

from conftest import ROOT
from e2e import assert_miou_printed, run_tool, tiny_seg_config

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


def test_meta_device_count_equals_a_real_forward():
    """The MACs counted on the meta device (shapes only) are those of a real forward, attention included."""
    from mmmetaformer.utils.complexity import build_model_from_config, count_macs, count_params_and_macs
    shape = (64, 160)
    real = build_model_from_config(config_path('caformer_s18'), 'cpu')
    assert count_params_and_macs(config_path('caformer_s18'), shape) == \
        (sum(p.numel() for p in real.parameters()), count_macs(real, shape, 'mmseg'))


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


def test_tta_without_tta_pipeline_is_a_clear_error():
    from mmengine.config import Config

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.utils.cli import enable_tta
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmdet', 'retinanet_poolformer_s12_1x.py'))
    with pytest.raises(InvalidSettingError, match='--tta needs tta_pipeline and tta_model'):
        enable_tta(cfg)


# --- layer-wise lr decay -------------------------------------------------------------------------------------------

def param_groups(model, optim_wrapper: dict):
    """name -> (lr, weight_decay) of every parameter in the optimizer that ``optim_wrapper`` builds for ``model``,
    and the optimizer wrapper."""
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(model, optim_wrapper)
    by_id = {id(p): (g['lr'], g['weight_decay']) for g in wrapper.optimizer.param_groups for p in g['params']}
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[i]: value for i, value in by_id.items()}, wrapper


def test_layer_decay_groups_of_upernet_caformer_s18():
    from mmmetaformer.utils.complexity import build_model_from_config
    cfg = load('caformer_s18')
    model = build_model_from_config(cfg, 'meta')
    groups, wrapper = param_groups(model, cfg.optim_wrapper)
    assert set(groups) == {n for n, _ in model.named_parameters()}  # every parameter, each in one group

    def lr(layer_id):  # 18 blocks: layer ids 0 (stem) ... 18, heads 19
        return pytest.approx(1e-4 * 0.95**(19 - layer_id))
    assert groups['backbone.stem.conv.weight'] == (lr(0), 0.05)
    assert groups['backbone.stem.conv.bias'] == (lr(0), 0.0)
    assert groups['backbone.stem.norm.weight'] == (lr(0), 0.0)
    assert groups['backbone.stages.0.blocks.0.token_mixer.pwconv1.weight'] == (lr(1), 0.05)
    assert groups['backbone.stages.0.blocks.2.mlp.act.scale'] == (lr(3), 0.0)  # StarReLU scalars
    assert groups['backbone.stages.0.blocks.2.mlp.act.bias'] == (lr(3), 0.0)
    assert groups['backbone.stages.1.downsample.norm.weight'] == (lr(4), 0.0)  # the stage's first block's id
    assert groups['backbone.stages.1.downsample.conv.weight'] == (lr(4), 0.05)
    assert groups['backbone.stages.1.blocks.0.norm1.weight'] == (lr(4), 0.0)
    assert groups['backbone.stages.2.blocks.0.token_mixer.qkv.weight'] == (lr(7), 0.05)
    assert groups['backbone.stages.2.blocks.8.res_scale1.scale'] == (lr(15), 0.0)
    assert groups['backbone.stages.3.blocks.2.mlp.fc2.weight'] == (lr(18), 0.05)
    assert groups['backbone.out_norms.0.weight'] == (lr(19), 0.0)  # fresh: the heads' lr
    assert groups['decode_head.fpn_bottleneck.conv.weight'] == (lr(19), 0.05)
    assert groups['decode_head.fpn_bottleneck.bn.weight'] == (lr(19), 0.0)
    assert groups['decode_head.conv_seg.bias'] == (lr(19), 0.0)
    assert groups['auxiliary_head.convs.0.conv.weight'] == (lr(19), 0.05)
    assert wrapper.get_lr()['lr'][0] == pytest.approx(1e-4)  # what mmengine logs: the base lr
    names = [n for g in wrapper.optimizer.param_groups for n in g['param_names']]
    assert sorted(names) == sorted(groups)


@pytest.mark.parametrize('config', ['mmdet/retinanet_caformer_s18_1x.py', 'mmpretrain/convformer_s18_in1k.py'])
def test_layer_decay_in_other_libraries(config):
    from mmmetaformer.utils.complexity import build_model_from_config
    model = build_model_from_config(osp.join(ROOT, 'configs', config), 'meta')
    optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.1),
                         constructor='mmmetaformer.LayerDecayOptimizerConstructor', paramwise_cfg=dict(decay_rate=0.5))
    groups, _ = param_groups(model, optim_wrapper)
    assert groups['backbone.stem.conv.weight'] == (0.5**19, 0.1)
    assert groups['backbone.stages.3.blocks.2.norm2.weight'] == (0.5, 0.0)
    heads = [(name, p) for name, p in model.named_parameters() if not name.startswith('backbone.')]
    assert heads and all(groups[name] == (1.0, 0.1 if p.ndim > 1 else 0.0) for name, p in heads)


def test_layer_decay_leaves_out_frozen_parameters():
    from mmmetaformer.utils.complexity import build_model_from_config
    cfg = load('convformer_s18')
    cfg.model.backbone.frozen_stages = 1
    model = build_model_from_config(cfg, 'meta')
    groups, _ = param_groups(model, cfg.optim_wrapper)
    assert not any(name.startswith(('backbone.stem.', 'backbone.stages.0.')) for name in groups)
    assert 'backbone.stages.1.blocks.0.norm1.weight' in groups


def test_layer_decay_refuses_other_backbones_and_bad_settings():
    from mmengine.optim import build_optim_wrapper
    from torch import nn
    model = nn.Module()
    model.backbone, model.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 2)
    optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4), paramwise_cfg=dict(decay_rate=0.9),
                         constructor='mmmetaformer.LayerDecayOptimizerConstructor')
    with pytest.raises(TypeError, match='needs a MetaFormer backbone .* has a Conv2d backbone'):
        build_optim_wrapper(model, optim_wrapper)
    for paramwise_cfg, message in [(None, 'decay_rate'), (dict(decay_rate=1.5), r'in \(0, 1\]'),
                                   (dict(decay_rate=0.9, num_layers=12), 'and nothing else')]:
        with pytest.raises(ValueError, match=message):
            build_optim_wrapper(model, dict(optim_wrapper, paramwise_cfg=paramwise_cfg))


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ade(tmp_path_factory) -> str:
    from mmmetaformer.testing import make_ade20k_like
    return make_ade20k_like(str(tmp_path_factory.mktemp('ade')), splits=(('training', 4), ('validation', 2)))


@pytest.fixture(scope='module')
def trained(ade, tmp_path_factory):
    """UperNet-CAFormer-S18 trained 2 iterations by tools/train.py: (config, work dir)."""
    tmp_path = tmp_path_factory.mktemp('upernet')
    config = tiny_seg_config(tmp_path, ade, 'upernet_caformer_s18_160k_ade20k')
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work)])
    assert 'LayerDecayOptimizerConstructor: 20 layer ids' in result.stdout + result.stderr
    assert 'Iter(val) [2/2]' in result.stdout + result.stderr
    return config, work


def test_tools_test(trained):
    config, work = trained
    assert_miou_printed(run_tool(['tools/test.py', config, str(work / 'iter_2.pth'), '--work-dir', str(work)]))


def test_tools_test_tta(trained, tmp_path):
    config, work = trained
    result = run_tool(['tools/test.py', config, str(work / 'iter_2.pth'), '--tta', '--work-dir', str(tmp_path)])
    assert_miou_printed(result)
    assert 'do not match exactly' not in result.stdout + result.stderr  # mmengine loaded every tensor
    dumped = open(glob.glob(str(tmp_path / '*.py'))[0]).read()  # the config the runner ran
    assert "type='SegTTAModel'" in dumped and "type='TestTimeAug'" in dumped


@pytest.mark.skipif(not osp.isfile(osp.join(MMSEG_TOOLS, 'train.py')), reason='mmseg ships no tools/ in its package')
def test_mmseg_own_tools(ade, tmp_path):
    config = tiny_seg_config(tmp_path, ade, 'upernet_caformer_s18_160k_ade20k')
    work = tmp_path / 'work'
    run_tool([osp.join(MMSEG_TOOLS, 'train.py'), config, '--work-dir', str(work)], cwd=str(tmp_path))
    assert_miou_printed(run_tool([osp.join(MMSEG_TOOLS, 'test.py'), config, str(work / 'iter_2.pth'),
                                  '--work-dir', str(work)], cwd=str(tmp_path)))


def test_get_flops_tool_on_a_config():
    result = run_tool(['tools/get_flops.py', config_path('caformer_s18')])
    assert 'input shape: 512x2048' in result.stdout
    assert 'params: 53.73 M' in result.stdout
    macs = float(result.stdout.split('MACs: ')[1].split(' G')[0])
    assert abs(macs - 1024) / 1024 < 0.03
