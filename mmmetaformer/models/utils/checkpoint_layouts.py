"""Every MetaFormer checkpoint layout in the wild, converted to ours.

Layouts (detected from the keys):

- ``sail_v1``: sail-sg/poolformer ImageNet files (``patch_embed.proj``, ``network.{2i}.{j}``, ``norm``, ``head``)
  and its detection/segmentation backbones (``norm0/2/4/6`` output norms).
- ``sail_v2``: sail-sg/metaformer baselines (``downsample_layers``, ``stages.{i}.{j}``, ``norm``, ``head``).
- ``mmpretrain``: mmpretrain's PoolFormer classifier (``backbone.`` + sail_v1 names, final norm ``backbone.norm6``,
  ``head.fc``), usually wrapped in ``{'state_dict': ...}``.
- ``sail_v1_dense``: whole dense-prediction models around a PoolFormer v1 backbone (the official mmdet/mmseg
  PoolFormer models, mmpretrain's PoolFormer with ``out_indices=(0, 2, 4, 6)``): ``backbone.`` + sail_v1 names with
  the output norms ``backbone.norm0/2/4/6``.
- ``timm``: ``stem``, ``stages.{i}.downsample``, ``stages.{i}.blocks.{j}``, ``head.norm``, ``head.fc``.
- ``mmmetaformer``: ours, as written by ``tools/convert_checkpoint.py`` or by a training run
  (``backbone.`` + timm-like names with 2-D Linear weights, classifier ``head.norm`` and ``head.fc``).

The canonical form is a flat dict of ``backbone.<our backbone key>`` and ``head.<our classifier head key>``.
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from torch import Tensor

from ...errors import InvalidSettingError

StateDict = Dict[str, Tensor]

BACKBONE, HEAD = 'backbone.', 'head.'
POINTWISE = re.compile(r'\.(mlp\.fc1|mlp\.fc2|pwconv1|pwconv2)\.weight$')


def detect_layout(state_dict: StateDict) -> str:
    """Name the layout of a state dict (see the module docstring); raise if it is none of them."""
    keys = list(state_dict)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has('backbone.network.') or has('backbone.patch_embed.'):
        return 'sail_v1_dense' if has('backbone.norm0.') else 'mmpretrain'
    if has('backbone.stem.'):
        return 'mmmetaformer'
    if has('network.') or has('patch_embed.'):
        return 'sail_v1'
    if has('downsample_layers.'):
        return 'sail_v2'
    if has('stem.') and has('stages.'):
        return 'timm'
    sample = ', '.join(keys[:5])
    raise InvalidSettingError(
        f'unrecognised checkpoint layout (first keys: {sample}); expected a sail-sg PoolFormer v1, '
        f'sail-sg MetaFormer-baselines, timm, mmpretrain PoolFormer or mmmetaformer checkpoint')


def _sail_classifier_key(key: str) -> Optional[str]:
    """The classifier of both sail-sg layouts: the final ``norm`` and the ``head`` (Linear or MlpHead)."""
    if key.startswith('norm.'):
        return HEAD + key
    if key.startswith('head.'):
        return HEAD + 'fc.' + key[len('head.'):]
    return None


def _sail_v1_key(key: str) -> Optional[str]:
    key = re.sub(r'layer_scale_([12])$', r'layer_scale\1.scale', key)
    if key.startswith('patch_embed.proj.'):
        return BACKBONE + 'stem.conv.' + key[len('patch_embed.proj.'):]
    match = re.match(r'network\.(\d+)\.(.*)$', key)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if index % 2:  # downsampling between stages: network.1/3/5
            return BACKBONE + f'stages.{(index + 1) // 2}.downsample.' + rest.replace('proj.', 'conv.', 1)
        return BACKBONE + f'stages.{index // 2}.blocks.' + rest
    match = re.match(r'norm([0246])\.(.*)$', key)
    if match:  # output norms of the official dense-prediction backbone
        return BACKBONE + f'out_norms.{int(match.group(1)) // 2}.{match.group(2)}'
    return _sail_classifier_key(key)


def _sail_v2_key(key: str) -> Optional[str]:
    match = re.match(r'downsample_layers\.(\d+)\.(pre_norm|post_norm|conv)\.(.*)$', key)
    if match:
        index, part, rest = int(match.group(1)), match.group(2), match.group(3)
        part = 'conv' if part == 'conv' else 'norm'
        if index == 0:
            return BACKBONE + f'stem.{part}.{rest}'
        return BACKBONE + f'stages.{index}.downsample.{part}.{rest}'
    match = re.match(r'stages\.(\d+)\.(\d+)\.(.*)$', key)
    if match:
        return BACKBONE + f'stages.{match.group(1)}.blocks.{match.group(2)}.{match.group(3)}'
    return _sail_classifier_key(key)


def _sail_v1_dense_key(key: str) -> Optional[str]:
    if key.startswith(BACKBONE):
        converted = _sail_v1_key(key[len(BACKBONE):])
        return converted if converted and converted.startswith(BACKBONE) else None
    return None


def _mmpretrain_key(key: str) -> Optional[str]:
    if key.startswith('backbone.norm6.'):  # mmpretrain's classifier norm on the last stage
        return HEAD + 'norm.' + key[len('backbone.norm6.'):]
    if key.startswith('head.fc.'):
        return key
    return _sail_v1_dense_key(key)


def _timm_key(key: str) -> Optional[str]:
    if key.startswith(('stem.', 'stages.', 'out_norms.')):  # out_norms: ours after stripping ``backbone.``
        return BACKBONE + key
    if key.startswith(('head.norm.', 'head.fc.')):
        return key
    return None


def _own_key(key: str) -> Optional[str]:
    return key if key.startswith((BACKBONE, HEAD)) else None


_CONVERTERS = {'sail_v1': _sail_v1_key, 'sail_v2': _sail_v2_key, 'mmpretrain': _mmpretrain_key,
               'sail_v1_dense': _sail_v1_dense_key,
               'timm': _timm_key, 'mmmetaformer': _own_key}


def to_canonical(state_dict: StateDict) -> Tuple[StateDict, list, str]:
    """Convert any known layout to ``backbone.*``/``head.*`` keys; return (converted, unused keys, layout)."""
    layout = detect_layout(state_dict)
    convert = _CONVERTERS[layout]
    converted, unused = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = convert(key)
        if new_key is None:
            unused.append(key)
            continue
        # NCHW implementations (PoolFormer v1, timm) store the MLP and SepConv pointwise layers as 1x1 convs.
        if layout != 'mmmetaformer' and value.dim() == 4 and value.shape[2:] == (1, 1) and \
                POINTWISE.search(new_key):
            value = value.flatten(1)
        converted[new_key] = value
    return converted, unused, layout


def known_layout(state_dict: StateDict) -> Optional[str]:
    """The layout of a state dict, or None when it is none of the MetaFormer layouts we know."""
    try:
        return detect_layout(state_dict)
    except InvalidSettingError:
        return None
