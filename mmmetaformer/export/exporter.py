"""Build an mm model from its config and checkpoint, and write it as an ONNX file (tools/export_onnx.py).

The exporter is the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``) for every kind of model: the
detectors' data-dependent post-processing (score threshold, NMS, a variable number of boxes, RoI ops) maps onto
standard ONNX operators through ``symbolic`` functions, which ``torch.export`` (the dynamo exporter) cannot trace
through; tracing also exports a whole model in seconds and keeps image sizes dynamic where they are computed with
tensor operations.
"""
import contextlib
import os.path as osp
import re
import traceback
import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..utils.configs import leaf_datasets
from ..utils.streams import silenced_descriptor
from . import ExportModule, build_export_model, task_of
from .base import INPUT_NAME, ExportError
from .replacements import exportable_modules

DEFAULT_OPSET = 17
# Input (H, W) where the test pipeline does not fix one: ADE20K's short side 512; COCO's 800 x 1333 padded to 32.
DEFAULT_EXPORT_SIZES = {'mmseg': (512, 512), 'mmdet': (800, 1344)}


def quiet_mm_logs() -> None:
    """Only warnings and errors from mmengine's logger (no info lines on building models and loading weights);
    call before anything creates the logger."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')


def build_model(cfg) -> nn.Module:
    """The config's model in eval mode on the CPU, SyncBN reverted to BatchNorm, weights not initialised (no
    download of the ``init_cfg`` checkpoint: the exported weights come from the checkpoint given)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from ..utils.complexity import build_model_from_config
    init_default_scope(task_of(cfg))
    with warnings.catch_warnings():  # mmseg's loss warns about a training setting
        warnings.filterwarnings('ignore', message='Default ``avg_non_ignore`` is False')
        return revert_sync_batchnorm(build_model_from_config(cfg)).eval()


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load a checkpoint of exactly this model (file or URL), refusing one that does not fit it."""
    from ..models.utils import check_model_checkpoint
    state_dict = check_model_checkpoint(checkpoint, model)
    expected = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=True)


def config_test_pipeline(cfg) -> list:
    """The steps of the config's test (else validation) dataset pipeline."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    for dataset in leaf_datasets(loader.get('dataset') if loader else None):
        if dataset.get('pipeline'):
            return list(dataset['pipeline'])
    return list(cfg.get('test_pipeline') or [])


def fixed_input_shape(cfg) -> Optional[Tuple[int, int]]:
    """The (H, W) every image has after the config's test pipeline, if the pipeline fixes one (a centre crop or a
    resize without keeping the ratio), else None."""
    shape = None
    for step in config_test_pipeline(cfg):
        kind = str(step.get('type', '')).split('.')[-1]
        size = None
        if kind == 'CenterCrop':
            size = step.get('crop_size')
        elif kind == 'Resize' and not step.get('keep_ratio', False) and step.get('scale') is not None:
            size = step['scale']
        elif kind in ('Resize', 'RandomResize', 'ResizeEdge', 'ResizeShortestEdge', 'ResizeToMultiple'):
            shape = None  # a later size-changing step that keeps the ratio
        if size is not None:
            width, height = (size, size) if isinstance(size, int) else size  # mm sizes are (w, h)
            shape = (int(height), int(width))
    return shape


def default_input_shape(cfg) -> Tuple[int, int]:
    """The (H, W) of an export without ``--shape``: the test pipeline's fixed size, else 512x512 (segmentation)
    or 800x1344 (detection)."""
    shape = fixed_input_shape(cfg)
    if shape is not None:
        return shape
    task = task_of(cfg)
    if task not in DEFAULT_EXPORT_SIZES:
        raise ExportError(f'the test pipeline of this {task} config does not fix the image size: give --shape H W')
    return DEFAULT_EXPORT_SIZES[task]


def fixed_size_reasons(wrapper: ExportModule) -> Dict[str, str]:
    """Why a graph traced from ``wrapper`` would hold only for the traced input size: {where: why}. Modules that
    compute size-specific values in Python (RandFormer's resampled mixing matrices) and the wrapper's own reason
    (sliding-window inference)."""
    from ..models import RandomMixing
    reasons = {name: 'RandFormer resamples its random mixing matrix for each token grid'
               for name, module in wrapper.named_modules() if isinstance(module, RandomMixing)}
    if wrapper.fixed_size_reason:
        reasons[type(wrapper).__name__] = wrapper.fixed_size_reason
    return reasons


def example_input(shape: Tuple[int, int], batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """A random raw image batch (N, 3, H, W): float32 with integer values 0..255, as a loaded image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch_size, 3, *shape), generator=generator).float()


def _module_names(wrapper: nn.Module) -> Dict[int, str]:
    return {id(module): name or type(module).__name__ for name, module in wrapper.named_modules()}


def _module_in_traceback(error: BaseException, names: Dict[int, str]) -> Optional[str]:
    """The innermost module of ours whose code raised ``error`` (a failure while tracing)."""
    found = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get('self')
        if owner is not None and id(owner) in names:
            found = f'{names[id(owner)]} ({type(owner).__name__})'
    return found


def _module_running_op(wrapper: nn.Module, x: torch.Tensor, op_name: str) -> Optional[str]:
    """The first module during whose forward the operator ``op_name`` runs (a failure of the ONNX translation of
    that operator, after tracing), seen as a torch function or as an aten operator."""
    from torch.overrides import TorchFunctionMode

    # A private module: torch 2.13 has no public home for TorchDispatchMode, the only hook that sees the aten
    # operators a torch function runs inside (the exporter names those). Its behaviour here is pinned by
    # tests/test_export/test_exporter.py::test_the_operator_search_sees_aten_operators_inside_torch_functions.
    from torch.utils._python_dispatch import TorchDispatchMode
    stack, found, handles = [], [], []

    def leave(module: nn.Module, args, output) -> None:
        stack.pop()

    for name, module in wrapper.named_modules():
        label = f'{name or "model"} ({type(module).__name__})'
        handles.append(module.register_forward_pre_hook(lambda m, a, label=label: stack.append(label)))
        handles.append(module.register_forward_hook(leave))

    def note(name: str) -> None:
        if not found and stack and name == op_name:
            found.append(stack[-1])

    class FindFunction(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            note(getattr(func, '__name__', ''))
            return func(*args, **(kwargs or {}))

    class FindOp(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            note(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), FindFunction(), FindOp():
            wrapper(x)
    except Exception:  # noqa: BLE001  (only a search for the name; the export error is what is reported)
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _explain_failure(error: Exception, wrapper: nn.Module, x: torch.Tensor, config: str) -> ExportError:
    op = re.search(r"operator '(?:aten::)?([\w.]+)'", str(error))
    where = _module_running_op(wrapper, x, op.group(1)) if op else None
    where = where or _module_in_traceback(error, _module_names(wrapper))
    place = f' in module {where}' if where else ''
    return ExportError(f'cannot export {config}{place}: {type(error).__name__}: {error}')


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's noise: its warnings (tracer warnings about Python values, the legacy exporter's
    deprecation notice) and the whole TorchScript graph it prints to the C-level stdout when it fails (the
    failure is reported as an :class:`ExportError` instead)."""
    with silenced_descriptor(1), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', FutureWarning)
        warnings.filterwarnings('ignore', module=r'torch\.onnx')
        yield


def export_onnx(wrapper: ExportModule, out: str, shape: Tuple[int, int], dynamic: bool = False,
                opset: int = DEFAULT_OPSET, config: str = 'the model') -> None:
    """Trace ``wrapper`` on a random image of ``shape`` (H, W) and write the ONNX graph to ``out``.

    ``dynamic`` makes H and W (and N where the wrapper allows) dynamic; a model with size-specific Python
    computation (RandFormer) is refused. Failures raise :class:`ExportError` naming ``config`` and the module.
    The exporter's warnings are not shown (the tracer's concern sizes frozen as constants: ``verify`` checks
    dynamic exports at two sizes).
    """
    if dynamic:
        fixed = fixed_size_reasons(wrapper)
        if fixed:
            where, why = next(iter(fixed.items()))
            raise ExportError(f'{config} cannot be exported with --dynamic: {why} ({where}), so a graph traced at '
                              f'one input size gives wrong results at any other. Export at a fixed size instead '
                              f'(--shape H W, one file per input size).')
    import onnx
    wrapper.eval()
    x = example_input(shape)
    directory = osp.dirname(osp.abspath(out))
    if not osp.isdir(directory):
        raise ExportError(f'the output folder {directory} does not exist')
    traced = {}
    hook = wrapper.register_forward_hook(
        lambda module, args, outputs: traced.update(zip(wrapper.output_names, (o.shape for o in outputs))))
    dynamic_axes = wrapper.dynamic_axes(dynamic)
    try:
        with _quiet_exporter(), exportable_modules(wrapper), torch.no_grad():
            torch.onnx.export(wrapper, (x, ), out, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(wrapper.output_names), dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    except Exception as error:  # noqa: BLE001  (tracing and ONNX translation fail with many types)
        with exportable_modules(wrapper):
            raise _explain_failure(error, wrapper, x, config) from error
    finally:
        hook.remove()
    declare_output_shapes(out, traced, dynamic_axes)
    onnx.checker.check_model(out, full_check=True)


def declare_output_shapes(path: str, traced: Dict[str, Sequence[int]],
                          dynamic_axes: Dict[str, Dict[int, str]]) -> None:
    """Set the declared shape of each output of the ONNX file ``path``: its ``traced`` size on every axis, the
    axis's name on the axes that vary (``dynamic_axes``).

    The legacy exporter's own shape inference does not know the sizes that follow a data-dependent count (the rows
    NonMaxSuppression keeps): it gives them unrelated symbols or wrong numbers (Mask R-CNN's ``masks`` as
    (N, 1, H, W)), which onnxruntime only warns about and runtimes that trust the declared shapes reject. Strict ONNX
    shape inference with data propagation then fails where the graph computes another static size than declared.
    """
    import onnx
    model = onnx.load(path)
    for output in model.graph.output:
        axes = dynamic_axes.get(output.name, {})
        shape = output.type.tensor_type.shape
        del shape.dim[:]
        for axis, size in enumerate(traced[output.name]):
            if axis in axes:
                shape.dim.add().dim_param = axes[axis]
            else:
                shape.dim.add().dim_value = int(size)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx.save(model, path)


def prepare(config_path: str, checkpoint: str, cfg_options: Optional[dict] = None):
    """The config, the model with the checkpoint's weights, and its export wrapper."""
    from mmengine.config import Config
    cfg = Config.fromfile(config_path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model(cfg)
    load_weights(model, checkpoint)
    return cfg, model, build_export_model(model, cfg)
