"""Loading checkpoints of any layout into modules, and checking that a whole-model checkpoint fits its model.

:class:`PretrainedFromAnyLayout` gives a module the ``init_cfg=dict(type='Pretrained', checkpoint=...)`` behaviour
for every layout of :mod:`.checkpoint_layouts`; :func:`check_model_checkpoint` refuses a checkpoint that does not
fit a model exactly (mmengine would load what matches and only warn).
"""
from collections import OrderedDict
from typing import Callable, List, Optional

from mmengine.logging import MMLogger
from torch import nn

from ...errors import InvalidSettingError
from .checkpoint_files import read_checkpoint
from .checkpoint_layouts import BACKBONE, StateDict, known_layout, to_canonical


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
        raise InvalidSettingError(
            f'{what}: {mismatches[0]} ({type(module).__name__}); the checkpoint is for a different '
            f'architecture or size. Add strict=False to the init_cfg to load only the tensors '
            f'that match.')
    if mismatches:
        MMLogger.get_current_instance().warning(f'{what}: skipped tensors of another shape: {mismatches}')
    return OrderedDict((k, v) for k, v in state_dict.items() if k not in expected or expected[k].shape == v.shape)


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
    return check_model_weights(read_checkpoint(path), model, path, convert)


def bare_model(model: nn.Module) -> nn.Module:
    """The model inside mmengine's wrappers (distributed, test-time augmentation)."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_model_weights(state_dict: StateDict, model: nn.Module, path: str, convert: bool = False) -> StateDict:
    """The tensors of ``state_dict`` (read from ``path``) for ``model``, raising
    :class:`~mmmetaformer.errors.InvalidSettingError` unless they are exactly the model's (see
    :func:`check_model_checkpoint`, which reads the file first)."""
    layout = known_layout(state_dict)
    if layout not in (None, 'mmmetaformer'):
        if not convert or layout == 'sail_v1_dense':
            raise InvalidSettingError(
                f'{path} is a checkpoint in the {layout} layout, not one of this model: convert it '
                f'first with `python tools/convert_checkpoint.py {path} converted.pth` and use '
                f'converted.pth')
        state_dict = to_canonical(state_dict)[0]
    problems = tensor_mismatches(state_dict, bare_model(model).state_dict(), may_lack=lambda key: False,
                                 may_add=lambda key: '.out_norms.' in f'.{key}')
    if problems:
        raise InvalidSettingError(
            f'{path} does not fit the model of this config ({len(problems)} tensors differ; first: '
            f'{problems[0]}). Was it trained with another config or model size?')
    return state_dict


def check_start_weights(state_dict: StateDict, model: nn.Module, path: str) -> None:
    """Raise :class:`~mmmetaformer.errors.InvalidSettingError` when ``state_dict`` (read from ``path``, the
    ``load_from`` of a new training run) is for another architecture: none of its tensors fits ``model``, or its
    backbone tensors differ from the model's (another shape, or tensors only one side has; the output norms of
    dense prediction excepted). Heads of another shape (another number of classes) are what fine-tuning changes:
    mmengine skips them with a warning."""
    expected = bare_model(model).state_dict()
    fitting = [key for key, value in state_dict.items() if key in expected and expected[key].shape == value.shape]
    backbone = {key: value for key, value in state_dict.items() if key.startswith(BACKBONE)}
    wanted = {key: value for key, value in expected.items() if key.startswith(BACKBONE)}
    mismatches = tensor_mismatches(backbone, wanted, may_lack=lambda key: '.out_norms.' in key,
                                   may_add=lambda key: '.out_norms.' in key) if backbone else []
    if fitting and not mismatches:
        return
    first = mismatches[0] if mismatches else \
        f'none of its {len(state_dict)} tensors has the name and shape of one of the model\'s'
    raise InvalidSettingError(
        f'load_from={path} is a checkpoint of another architecture ({first}). Give a checkpoint of this model '
        f'or of the same backbone; for backbone weights alone use model.backbone.init_cfg=dict(type='
        f'\'Pretrained\', checkpoint=...), which reads every known layout.')


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
