"""Layer-wise learning-rate decay for models with a MetaFormer backbone (``model.backbone``), as used to fine-tune
ConvNeXt/BEiT-style backbones for dense prediction.

Layer ids: 0 is the stem; the blocks then count 1, 2, ... in depth order across the four stages; a stage's
downsampling layer takes the id of that stage's first block (it is part of the stage and runs just before that
block); the output norms, the neck and the heads take ``num_layers = number of blocks + 1``. A parameter of layer
``i`` gets ``lr * decay_rate ** (num_layers - i)``: the heads keep the base lr, the last block gets ``decay_rate``
times it and the stem ``decay_rate ** num_layers``. The output norms are fresh (not in the ImageNet weights), so
they train at the heads' rate, as mmseg's ConvNeXt recipe does for its output norms.

One-dimensional parameters (every norm weight and bias, layer and residual scales, StarReLU's scale and bias, any
bias) get no weight decay; weights of convolutions and linear layers get the optimizer's.
"""
from collections import OrderedDict
from typing import List, Optional, Tuple

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ...errors import InvalidSettingError
from ...models.backbones.metaformer import MetaFormer
from ...registry import OPTIM_WRAPPER_CONSTRUCTORS


def metaformer_layer_id(name: str, depths: List[int]) -> int:
    """The layer id (see the module docstring) of a parameter of a MetaFormer backbone, named relative to it."""
    num_layers = sum(depths) + 1
    parts = name.split('.')
    if parts[0] == 'stem':
        return 0
    if parts[0] == 'out_norms':
        return num_layers
    if parts[0] == 'stages' and len(parts) > 2:
        stage = int(parts[1])
        first_block = 1 + sum(depths[:stage])
        if parts[2] == 'downsample':
            return first_block
        if parts[2] == 'blocks':
            return first_block + int(parts[3])
    raise InvalidSettingError(f'layer-wise lr decay: MetaFormer parameter {name!r} is in no known part of the backbone '
                              f'(stem, stages.<i>.downsample, stages.<i>.blocks.<j>, out_norms)')


def find_metaformer_backbone(model: nn.Module) -> MetaFormer:
    """``model.backbone``, which must be a MetaFormer (mmdet, mmseg and mmpretrain models all keep it there)."""
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, MetaFormer):
        found = 'no backbone attribute' if backbone is None else f'a {type(backbone).__name__} backbone'
        raise TypeError(f'LayerDecayOptimizerConstructor needs a MetaFormer backbone (PoolFormer, ..., CAFormer) as '
                        f'model.backbone, but the {type(model).__name__} model has {found}. Use mmengine\'s '
                        f'DefaultOptimWrapperConstructor (drop `constructor` and `paramwise_cfg`) for other models.')
    return backbone


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay over a MetaFormer backbone, no weight decay on one-dimensional parameters.

    Config::

        optim_wrapper = dict(
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='mmmetaformer.LayerDecayOptimizerConstructor',
            paramwise_cfg=dict(decay_rate=0.95))

    ``decay_rate`` in (0, 1] is the lr ratio between consecutive layers (1.0: no decay). The parameter groups are
    ordered by decreasing lr, so the lr that mmengine logs (the first group's) is the base lr. Each group lists its
    parameters' names in ``param_names``. Frozen parameters (``requires_grad=False``) are left out.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'decay_rate' not in paramwise_cfg or set(paramwise_cfg) != {'decay_rate'}:
            raise InvalidSettingError(
                f'LayerDecayOptimizerConstructor takes paramwise_cfg=dict(decay_rate=...) and nothing '
                f'else, got paramwise_cfg={paramwise_cfg}')
        decay_rate = paramwise_cfg['decay_rate']
        if not isinstance(decay_rate, (int, float)) or not 0 < decay_rate <= 1:
            raise InvalidSettingError(
                f'LayerDecayOptimizerConstructor: decay_rate must be in (0, 1], got {decay_rate!r}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.decay_rate = float(decay_rate)

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """Fill ``params`` with one group per (layer, weight decay or not) of ``module`` (the unwrapped model)."""
        backbone = find_metaformer_backbone(module)
        depths = list(backbone.depths)
        num_layers = sum(depths) + 1
        groups: 'OrderedDict[Tuple[int, bool], dict]' = OrderedDict()
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith('backbone.'):
                layer_id = metaformer_layer_id(name[len('backbone.'):], depths)
            else:
                layer_id = num_layers
            decays = param.ndim > 1 and not name.endswith('.bias')
            group = groups.get((layer_id, decays))
            if group is None:
                group = groups[(layer_id, decays)] = dict(params=[], param_names=[], layer_id=layer_id,
                                                          lr=self.base_lr * self.decay_rate**(num_layers - layer_id))
                if self.base_wd is not None:
                    group['weight_decay'] = self.base_wd if decays else 0.0
            group['params'].append(param)
            group['param_names'].append(name)
        ordered = sorted(groups.values(), key=lambda g: (-g['layer_id'], not g.get('weight_decay')))
        params.extend(ordered)
        MMLogger.get_current_instance().info(
            f'LayerDecayOptimizerConstructor: {num_layers + 1} layer ids (stem 0, blocks 1-{num_layers - 1}, '
            f'output norms/neck/heads {num_layers}), decay_rate {self.decay_rate}: '
            f'lr x{self.decay_rate**num_layers:.4g} (stem) to x1 (heads); '
            f'{sum(len(g["params"]) for g in ordered)} parameters in {len(ordered)} groups')
