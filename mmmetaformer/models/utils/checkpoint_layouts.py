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
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.logging import MMLogger
from torch import Tensor, nn

StateDict = Dict[str, Tensor]

BACKBONE, HEAD = 'backbone.', 'head.'
POINTWISE = re.compile(r'\.(mlp\.fc1|mlp\.fc2|pwconv1|pwconv2)\.weight$')


def unwrap(checkpoint) -> StateDict:
    """The state dict inside a checkpoint file's content (plain, ``state_dict``, ``model`` or ``module``)."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'a checkpoint must be a dict of tensors, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return unwrap(checkpoint[key])
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in checkpoint.items()
                       if isinstance(v, Tensor))


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
    raise ValueError(f'unrecognised checkpoint layout (first keys: {sample}); expected a sail-sg PoolFormer v1, '
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


def tensor_mismatches(found: StateDict, expected: StateDict, may_lack: Callable[[str], bool],
                      may_add: Callable[[str], bool]) -> List[str]:
    """How a checkpoint's tensors (``found``) differ from a model's (``expected``): first tensors of another shape,
    then tensors only the checkpoint has (unless ``may_add(key)``), then tensors it lacks (unless ``may_lack(key)``).
    """

    def describe(key: str, found_shape, wanted_shape) -> str:
        found_shape = tuple(found_shape) if found_shape is not None else 'absent'
        wanted_shape = tuple(wanted_shape) if wanted_shape is not None else 'absent'
        return f'tensor {key!r} has shape {found_shape} in the checkpoint but {wanted_shape} in the model'

    mismatches = [describe(k, v.shape, expected[k].shape) for k, v in found.items()
                  if k in expected and expected[k].shape != v.shape]
    mismatches += [describe(k, v.shape, None) for k, v in found.items() if k not in expected and not may_add(k)]
    mismatches += [describe(k, None, v.shape) for k, v in expected.items() if k not in found and not may_lack(k)]
    return mismatches


def select_compatible(state_dict: StateDict, module: nn.Module, what: str, strict: bool = True) -> StateDict:
    """The tensors of ``state_dict`` to load into ``module``.

    With ``strict``, the first tensor whose shape differs, or that only one side has (a checkpoint of another depth
    has no shape conflict, only extra or missing blocks), is an error naming it and both shapes. Without, those
    tensors are skipped with a warning. The output norms of dense prediction are optional on both sides (they
    depend on ``out_indices`` and ``norm_outputs``, not on the architecture).
    """
    expected = module.state_dict()
    optional = (lambda key: key.startswith('out_norms.')) if strict else (lambda key: True)
    mismatches = tensor_mismatches(state_dict, expected, may_lack=optional, may_add=optional)
    if strict and mismatches:
        raise ValueError(f'{what}: {mismatches[0]} ({type(module).__name__}); the checkpoint is for a different '
                         f'architecture or size. Add strict=False to the init_cfg to load only the tensors '
                         f'that match.')
    if mismatches:
        MMLogger.get_current_instance().warning(f'{what}: skipped tensors of another shape: {mismatches}')
    return OrderedDict((k, v) for k, v in state_dict.items() if k not in expected or expected[k].shape == v.shape)


def read_checkpoint(path_or_url: str, setting: Optional[str] = None) -> StateDict:
    """Read a local file or URL (as mmengine does) and return its state dict.

    Fails with a clear error when a URL cannot be downloaded (naming ``setting``, the config key that takes a local
    file instead) or when the file is not a torch checkpoint.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    try:
        content = CheckpointLoader.load_checkpoint(path_or_url, map_location='cpu')
    except Exception as error:  # noqa: BLE001  (network, file and unpickling errors come in many types)
        cause = f'{type(error).__name__}: {error}'
        if re.match(r'^(https?|s3|openmmlab|torchvision|modelzoo|pavi)://', str(path_or_url)):
            local = f"/path/to/{path_or_url.rsplit('/', 1)[-1]}"
            use = f'e.g. --cfg-options {setting}={local}' if setting else f'e.g. {local}'
            raise RuntimeError(
                f'could not download the weights from {path_or_url} ({cause}). Download the file on a machine with '
                f'internet access and use the local copy instead, {use} (any official layout works; '
                f'tools/convert_checkpoint.py is optional).') from error
        if isinstance(error, FileNotFoundError):
            raise
        raise RuntimeError(f'cannot read {path_or_url} as a torch checkpoint ({cause})') from error
    return unwrap(content)


def known_layout(state_dict: StateDict) -> Optional[str]:
    """The layout of a state dict, or None when it is none of the MetaFormer layouts we know."""
    try:
        return detect_layout(state_dict)
    except ValueError:
        return None


def check_model_checkpoint(path: str, model: nn.Module, convert: bool = False) -> StateDict:
    """Return the tensors of a whole-model checkpoint (file or URL), raising ``ValueError`` unless they are exactly
    those of ``model``.

    mmengine loads whatever matches and only warns, so an official or timm file, or a checkpoint of another size,
    would be tested or run with partly random weights. With ``convert``, a classifier in another known layout
    (official, timm, mmpretrain) is converted as ``tools/convert_checkpoint.py`` does; without, it is refused with
    a pointer to that tool. Output norms of stages the model does not return (an official detector's ``norm0``)
    are accepted: they change nothing it computes. A missing file raises ``FileNotFoundError``, an unreadable one
    ``RuntimeError``.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    state_dict = read_checkpoint(path)
    layout = known_layout(state_dict)
    if layout not in (None, 'mmmetaformer'):
        if not convert or layout == 'sail_v1_dense':
            raise ValueError(f'{path} is a checkpoint in the {layout} layout, not one of this model: convert it '
                             f'first with `python tools/convert_checkpoint.py {path} converted.pth` and use '
                             f'converted.pth')
        state_dict = to_canonical(state_dict)[0]
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    problems = tensor_mismatches(state_dict, model.state_dict(), may_lack=lambda key: False,
                                 may_add=lambda key: '.out_norms.' in f'.{key}')
    if problems:
        raise ValueError(f'{path} does not fit the model of this config ({len(problems)} tensors differ; first: '
                         f'{problems[0]}). Was it trained with another config or model size?')
    return state_dict


# The official weights by name (``init_cfg=dict(type='Pretrained', checkpoint='in21k')``): name -> file suffix.
# Every family has ImageNet-1K weights; ConvFormer and CAFormer also have 384-pixel fine-tunes, ImageNet-21K
# pre-training (21841-class head) and 21K pre-training fine-tuned on 1K (official metaformer_baselines.py).
NAMED_WEIGHTS = {'in1k': '', 'in1k_384': '_384', 'in21k': '_in21k', 'in21ft1k': '_in21ft1k',
                 'in21ft1k_384': '_384_in21ft1k'}
# The sizes of which official weights were published, per family.
_V1_ARCHS = ('s12', 's24', 's36', 'm36', 'm48')
_BASELINE_ARCHS = ('s18', 's36', 'm36', 'b36')
OFFICIAL_ARCHS = {'poolformer': _V1_ARCHS, 'poolformerv2': _V1_ARCHS, 'identityformer': _V1_ARCHS,
                  'randformer': _V1_ARCHS, 'convformer': _BASELINE_ARCHS, 'caformer': _BASELINE_ARCHS}
_ALL_WEIGHTS = ('convformer', 'caformer')


def official_weights_url(family: str, arch: str, weights: str = 'in1k') -> str:
    """The URL of the official ``weights`` (a name of :data:`NAMED_WEIGHTS`) of ``family`` (lower case, e.g.
    ``'caformer'``) at size ``arch`` (e.g. ``'s18'``); a clear error for weights that were never published."""
    if weights not in NAMED_WEIGHTS:
        raise ValueError(f'unknown official weights {weights!r}; the names are {", ".join(NAMED_WEIGHTS)}')
    if family not in OFFICIAL_ARCHS:
        raise ValueError(f'no official weights for {family!r}: named weights exist for the published families '
                         f'{", ".join(OFFICIAL_ARCHS)} (give a checkpoint path or URL instead)')
    if arch not in OFFICIAL_ARCHS[family]:
        raise ValueError(f'{family} has no arch {arch!r}; official weights exist for '
                         f'{", ".join(OFFICIAL_ARCHS[family])}')
    if weights != 'in1k' and family not in _ALL_WEIGHTS:
        raise ValueError(f'{family}_{arch} has official ImageNet-1K weights only (\'in1k\'); {weights!r} weights '
                         f'were published for {" and ".join(_ALL_WEIGHTS)}')
    if family == 'poolformer':
        return f'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_{arch}.pth.tar'
    return f'https://huggingface.co/sail/dl/resolve/main/{family}/{family}_{arch}{NAMED_WEIGHTS[weights]}.pth'


def load_pretrained(module: nn.Module, checkpoint: str, part: str = BACKBONE, prefix: Optional[str] = None,
                    strict: bool = True) -> None:
    """Load one part (``'backbone.'`` or ``'head.'``) of a checkpoint in any known layout into ``module``, logging
    what is missing and what is unused. A tensor of the wrong shape is an error, and so (with ``strict``) is a
    tensor that only one side has. ``prefix`` selects a sub-module of an mm checkpoint first (e.g.
    ``'backbone.'``, the mmengine ``Pretrained`` convention)."""
    logger = MMLogger.get_current_instance()
    name = type(module).__name__
    state_dict = read_checkpoint(checkpoint, setting=f'model.{part}init_cfg.checkpoint')
    if prefix:
        state_dict = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
    canonical, unused, layout = to_canonical(state_dict)
    weights = OrderedDict((k[len(part):], v) for k, v in canonical.items() if k.startswith(part))
    unused += [k for k in canonical if not k.startswith(part)]
    weights = select_compatible(weights, module, f'checkpoint {checkpoint}', strict)
    result = module.load_state_dict(weights, strict=False)
    missing = list(result.missing_keys)
    logger.info(f'{name}: loaded {len(weights) - len(result.unexpected_keys)} tensors from {checkpoint} '
                f'({layout} layout)')
    if missing:
        fresh = all(k.startswith('out_norms.') for k in missing)
        logger.log(20 if fresh else 30, f'{name}: missing keys, left at their initial values'
                   f'{" (the fresh output norms of dense prediction)" if fresh else ""}: {missing}')
    if result.unexpected_keys or unused:
        logger.info(f'{name}: unused checkpoint keys: {list(result.unexpected_keys) + unused}')


class PretrainedFromAnyLayout:
    """Mixin for mmengine ``BaseModule`` classes: ``init_cfg=dict(type='Pretrained', checkpoint=PATH_OR_URL)``
    (optional ``prefix``, ``strict``) loads the ``checkpoint_part`` of a checkpoint in any known layout; other
    init_cfgs work as usual."""
    checkpoint_part = BACKBONE

    def checkpoint_location(self, checkpoint: str) -> str:
        """The file or URL to load for the init_cfg's ``checkpoint`` (modules with named weights override this)."""
        return checkpoint

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            load_pretrained(self, self.checkpoint_location(cfg['checkpoint']), self.checkpoint_part, cfg.get('prefix'),
                            cfg.get('strict', True))
            self._is_init = True
        else:
            super().init_weights()
