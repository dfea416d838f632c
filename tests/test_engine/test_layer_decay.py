"""Layer-wise learning-rate decay (LayerDecayOptimizerConstructor): the groups of the UperNet configs, of the other
libraries' models, frozen parameters, refused settings."""
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT

UPERNET_CAFORMER_S18 = osp.join(ROOT, 'configs', 'mmseg', 'upernet_caformer_s18_160k_ade20k.py')
UPERNET_CONVFORMER_S18 = osp.join(ROOT, 'configs', 'mmseg', 'upernet_convformer_s18_160k_ade20k.py')


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
    cfg = Config.fromfile(UPERNET_CAFORMER_S18)
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
    cfg = Config.fromfile(UPERNET_CONVFORMER_S18)
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


def test_layer_ids_of_the_backbone_parts_and_a_parameter_of_no_known_part():
    from mmmetaformer.engine.optimizers.layer_decay_optim_wrapper_constructor import metaformer_layer_id
    from mmmetaformer.errors import InvalidSettingError
    depths = [2, 2, 6, 2]  # 12 blocks: the stem 0, the blocks 1-12, the output norms 13
    assert [metaformer_layer_id(name, depths) for name in (
        'stem.conv.weight', 'stages.0.blocks.1.norm1.weight', 'stages.2.downsample.conv.weight',
        'stages.2.blocks.5.mlp.fc1.weight', 'out_norms.3.bias')] == [0, 2, 5, 10, 13]
    for name in ('pos_embed', 'stages.1.extra_scale', 'stages.1'):
        with pytest.raises(InvalidSettingError, match=f"MetaFormer parameter '{name}' is in no known part of the "
                                                      'backbone \\(stem, stages'):
            metaformer_layer_id(name, depths)
