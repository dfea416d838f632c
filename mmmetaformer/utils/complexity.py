"""Parameters and multiply-accumulates (MACs) of the model of any mmdet / mmseg / mmpretrain config.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions, matrix products and attention
(on PyTorch's math backend, since the counter has no formula for the fused CPU kernel); element-wise work (norms,
pooling, activations, interpolation) is not counted, as in the papers. The model runs ``forward(mode='tensor')`` on
one image: for a segmentor the backbone, neck and decode head (no auxiliary head, which only trains); for a
detector the backbone, neck and heads up to their raw outputs (for two-stage detectors the RPN and the RoI heads
on the proposals the RPN keeps for the random input image, up to its test-time maximum, so these counts vary a
little with the values); for a classifier the backbone and head.

The count first runs on PyTorch's ``meta`` device (shapes only, no arithmetic: a 512x2048 UperNet takes a second),
and on real CPU tensors for models whose forward depends on values (e.g. the proposals of a two-stage detector).
"""
import copy
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InvalidSettingError

# (height, width) at which each library's published numbers are counted: 512x2048 for ADE20K segmentors (the
# MetaFormer / ConvNeXt / Swin UperNet tables), 1333x800 for COCO detectors, 224x224 for ImageNet classifiers.
PUBLISHED_COMPLEXITY_SIZES = {'mmseg': (512, 2048), 'mmdet': (800, 1333), 'mmpretrain': (224, 224)}


class ModelCost(NamedTuple):
    """Exact parameter count (frozen ones included) and MACs of one forward pass at the given input size."""
    params: int
    macs: int


def _load(cfg: Union[str, Config]) -> Config:
    return Config.fromfile(cfg) if isinstance(cfg, str) else cfg


def _scope(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in PUBLISHED_COMPLEXITY_SIZES:
        raise InvalidSettingError(f'the config\'s default_scope is {scope!r}; expected one of '
                                  f'{sorted(PUBLISHED_COMPLEXITY_SIZES)} (an mmdet, mmseg or mmpretrain config)')
    return scope


def input_shape(cfg: Union[str, Config], shape: Optional[Union[int, Sequence[int]]] = None) -> Tuple[int, int]:
    """``shape`` as (height, width): an int is a square; None is the config's library's published input size."""
    if shape is None:
        return PUBLISHED_COMPLEXITY_SIZES[_scope(_load(cfg))]
    if isinstance(shape, int):
        shape = (shape, shape)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) <= 0:
        raise InvalidSettingError(f'an input shape is one size (a square) or (height, width), got {shape}')
    return shape


def build_model_from_config(cfg: Union[str, Config], device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """The config's model in eval mode, built on ``device`` without its pretrained weights (nothing is loaded or
    downloaded: the architecture is all that counts)."""
    from mmengine.registry import MODELS, DefaultScope
    cfg = _load(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # mmpretrain configs keep it beside the model, as the Runner takes it
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.pop('pretrained', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(_scope(cfg)), torch.device(device):
        model = MODELS.build(model_cfg)
    return model.eval()


def _data_samples(scope: str, shape: Tuple[int, int]) -> Optional[list]:
    """What ``forward(mode='tensor')`` needs beside the image: detectors read the image size from the metainfo."""
    if scope != 'mmdet':
        return None
    from mmdet.structures import DetDataSample
    return [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                                        scale_factor=(1.0, 1.0)))]


def count_macs(model: nn.Module, shape: Tuple[int, int], scope: str) -> int:
    """MACs of ``model.forward(mode='tensor')`` on one image of ``shape`` (height, width), on the model's device."""
    device = next(model.parameters()).device
    inputs = torch.randn(1, 3, *shape, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(inputs, _data_samples(scope, shape), mode='tensor')
    return counter.get_total_flops() // 2


def count_params_and_macs(cfg: Union[str, Config],
                          shape: Optional[Union[int, Sequence[int]]] = None) -> ModelCost:
    """Parameters and MACs of a config's model (a path or a loaded Config) at ``shape`` (an int for a square,
    (height, width), or None for the library's published size: see :data:`PUBLISHED_COMPLEXITY_SIZES`)."""
    cfg = _load(cfg)
    scope = _scope(cfg)
    shape = input_shape(cfg, shape)
    try:
        model = build_model_from_config(cfg, 'meta')
        macs = count_macs(model, shape, scope)
    except (NotImplementedError, RuntimeError):  # a forward that needs values (e.g. NMS), not only shapes
        model = build_model_from_config(cfg, 'cpu')
        macs = count_macs(model, shape, scope)
    return ModelCost(params=sum(p.numel() for p in model.parameters()), macs=macs)
