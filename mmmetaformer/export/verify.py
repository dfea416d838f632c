"""Check an exported graph in onnxruntime against the PyTorch model it came from.

The PyTorch side is the mm model itself, not the export wrapper: the raw image goes through the model's
``data_preprocessor`` and ``predict(..., rescale=False)`` (mmseg: ``ori_shape`` = the input size), and the
predictions are converted to the graph's outputs (:func:`torch_outputs`). :func:`compare_outputs` applies the
tolerances of the contract: classifier probabilities and segmentor logits to 1e-4; detections: the same number per
image, the same labels (but for one detection, or 1%, at the cut of the kept list), boxes to 1e-2 px, scores to
1e-3, mask IoU above 0.98. Every output must also have the shape the graph declares (:func:`shape_problems`).
onnxruntime runs on its CPU or, where it has it, its CUDA execution provider (``PROVIDERS``).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InvalidSettingError, UserError
from . import task_of
from .base import INPUT_NAME

PROBABILITY_TOL = 1e-4
LOGIT_TOL = 1e-4
BOX_TOL = 1e-2
SCORE_TOL = 1e-3
# The share of an image's detections that may differ at the cut of the kept list (see _match_detections).
MAX_DETECTIONS_AT_THE_CUT = 0.01
MIN_MASK_IOU = 0.98
PROVIDERS = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider'}


@dataclass
class Check:
    """One compared quantity: its worst value and the limit it must stay within."""
    name: str
    value: float
    limit: float
    higher_is_better: bool = False

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def __str__(self) -> str:
        relation = '>=' if self.higher_is_better else '<='
        return f'{self.name:<34}{self.value:>12.3g}  (must be {relation} {self.limit:g})  {"ok" if self.ok else "FAIL"}'


@dataclass
class VerifyReport:
    """The checks of one comparison and the problems that are not numbers (a missing output, other counts)."""
    checks: List[Check] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(check.ok for check in self.checks)

    def __str__(self) -> str:
        lines = [str(check) for check in self.checks] + [f'FAIL: {p}' for p in self.problems]
        lines += [f'note: {n}' for n in self.notes]
        return '\n'.join(lines + ['agrees within tolerance' if self.ok else 'DOES NOT AGREE'])


def _data_sample(task: str, height: int, width: int):
    if task == 'mmpretrain':
        from mmpretrain.structures import DataSample
    elif task == 'mmseg':
        from mmseg.structures import SegDataSample as DataSample
    else:
        from mmdet.structures import DetDataSample as DataSample
    # the input is the image: predictions at its size (no rescaling to an original size)
    return DataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0)))


def _detection_outputs(results) -> Dict[str, Tensor]:
    """mmdet predictions as the graph's outputs, padded to the largest count with label -1."""
    count = max(len(r.pred_instances) for r in results)
    dets = torch.zeros(len(results), count, 5)
    labels = torch.full((len(results), count), -1, dtype=torch.int64)
    with_masks = 'masks' in results[0].pred_instances
    if with_masks:
        height, width = results[0].metainfo['img_shape']
        masks = torch.zeros(len(results), count, height, width, dtype=torch.bool)
    for i, result in enumerate(results):
        instances = result.pred_instances
        n = len(instances)
        dets[i, :n, :4] = instances.bboxes.float()
        dets[i, :n, 4] = instances.scores.float()
        labels[i, :n] = instances.labels
        if with_masks:
            masks[i, :n] = instances.masks.bool()
    outputs = dict(dets=dets, labels=labels)
    if with_masks:
        outputs['masks'] = masks
    return outputs


@torch.no_grad()
def torch_outputs(model: nn.Module, cfg, input: Tensor) -> Dict[str, Tensor]:  # noqa: A002
    """The mm model's predictions for a raw image batch (N, 3, H, W), in the form of the graph's outputs, through
    its own ``data_preprocessor`` and ``predict(..., rescale=False)``."""
    task = task_of(cfg)
    height, width = input.shape[-2:]
    data = dict(inputs=list(input.float()), data_samples=[_data_sample(task, height, width) for _ in input])
    data = model.data_preprocessor(data, False)
    if task == 'mmdet':
        return _detection_outputs(model.predict(data['inputs'], data['data_samples'], rescale=False))
    results = model.predict(data['inputs'], data['data_samples'])
    if task == 'mmpretrain':
        return dict(scores=torch.stack([r.pred_score for r in results]))
    return dict(seg_logits=torch.stack([r.seg_logits.data for r in results]))


class ProviderUnavailableError(UserError, RuntimeError):
    """The onnxruntime execution provider asked for is not installed or does not start on this machine."""


def check_provider(provider: str) -> str:
    """onnxruntime's name of the execution provider ``provider`` ('cpu' or 'cuda').

    Raises:
        InvalidSettingError: ``provider`` is neither 'cpu' nor 'cuda'.
        ProviderUnavailableError: this onnxruntime does not have it.
    """
    import onnxruntime as ort
    if provider not in PROVIDERS:
        raise InvalidSettingError(f'unknown onnxruntime provider {provider!r}: one of {sorted(PROVIDERS)}')
    name, available = PROVIDERS[provider], ort.get_available_providers()
    if name not in available:
        raise ProviderUnavailableError(f'onnxruntime {ort.__version__} has no {name} (it has {", ".join(available)}): '
                                       f'the CUDA provider needs the onnxruntime-gpu package built for the installed '
                                       f'CUDA')
    return name


def inference_session(path: str, provider: str = 'cpu'):
    """An onnxruntime session of an exported file on ``provider`` ('cpu' or 'cuda'). On CUDA, operators without a
    CUDA kernel run on the CPU, and TF32 is off so that the tolerances of float32 apply."""
    import onnxruntime as ort
    name = check_provider(provider)
    providers = [name] if provider == 'cpu' else [(name, {'use_tf32': '0'}), PROVIDERS['cpu']]
    session = ort.InferenceSession(path, providers=providers)
    if name not in session.get_providers():  # onnxruntime falls back to the CPU when a provider fails to start
        raise ProviderUnavailableError(f'onnxruntime could not start {name} (see its log above); the session has '
                           f'{session.get_providers()}')
    return session


def run_session(session, input: Tensor) -> Dict[str, np.ndarray]:  # noqa: A002
    """The outputs of an onnxruntime session on a raw image batch, by name."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: input.float().numpy()})))


def onnx_outputs(path: str, input: Tensor, provider: str = 'cpu') -> Dict[str, np.ndarray]:  # noqa: A002
    """Run an exported file in onnxruntime (``provider`` 'cpu' or 'cuda') on a raw image batch; the outputs by
    name."""
    return run_session(inference_session(path, provider), input)


def declared_shapes(path: str) -> Dict[str, List[Union[int, str, None]]]:
    """The shapes an exported file declares for its inputs and outputs, by name: a number for a fixed size, a name
    for a varying one, None where it declares nothing. Read from the file: an onnxruntime session's own shapes are
    its inference merged over the declaration."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    return {value.name: [_declared_size(dim) for dim in value.type.tensor_type.shape.dim]
            for value in list(graph.input) + list(graph.output)}


def _declared_size(dim) -> Union[int, str, None]:
    if dim.HasField('dim_value'):
        return dim.dim_value
    return dim.dim_param if dim.HasField('dim_param') else None


def shape_problems(declared: Dict[str, Sequence[Union[int, str, None]]],
                   returned: Dict[str, Sequence[int]]) -> List[str]:
    """Where the shapes of a run's input and outputs (``returned``, by name) differ from the ``declared`` ones: a
    number must be the size returned, a name must stand for one size throughout the run, every axis declared."""
    problems, sizes = [], {}
    for name, shape in returned.items():
        dims = declared[name]
        if len(dims) != len(shape) or not all([_fits(dim, size, sizes) for dim, size in zip(dims, shape)]):
            named = ', '.join(f'{dim}={size}' for dim, size in sizes.items())
            problems.append(f'{name}: declared shape {_shape_text(dims)}, onnxruntime returned {tuple(shape)}'
                            + (f' (where {named})' if named else ''))
    return problems


def _fits(dim: Union[int, str, None], size: int, sizes: Dict[str, int]) -> bool:
    if isinstance(dim, str):
        return sizes.setdefault(dim, size) == size
    return dim == size


def _shape_text(dims: Sequence[Union[int, str, None]]) -> str:
    return '(' + ', '.join('?' if dim is None else str(dim) for dim in dims) + ')'


def _max_abs_diff(expected: Tensor, actual: np.ndarray) -> float:
    return float((expected.double() - torch.from_numpy(np.asarray(actual)).double()).abs().max()) \
        if expected.numel() else 0.0


def _match_detections(expected: Dict[str, Tensor], actual: Dict[str, np.ndarray], image: int,
                      report: VerifyReport) -> List[tuple]:
    """Pairs (expected row, actual row) of one image: each expected detection with the unused actual detection of
    the same label nearest to it (near-equal scores may come in another order).

    A detection without a partner whose score is at most onnxruntime's lowest kept score (within the score
    tolerance) sits at the cut of the kept list: candidates of near-equal score at the cuts before and after the
    non-maximum suppression (``nms_pre``, ``max_per_img``) can go either way, and one admitted on one side only
    pushes the lowest out. One detection, or up to :data:`MAX_DETECTIONS_AT_THE_CUT` of them, may differ so (noted).
    """
    keep_e = (expected['labels'][image] >= 0).nonzero().flatten().tolist()
    actual_labels = torch.from_numpy(np.asarray(actual['labels'][image])).long()
    keep_a = (actual_labels >= 0).nonzero().flatten().tolist()
    if len(keep_e) != len(keep_a):
        report.problems.append(f'image {image}: PyTorch finds {len(keep_e)} detections, onnxruntime {len(keep_a)}')
        return []
    actual_dets = torch.from_numpy(np.asarray(actual['dets'][image])).double()
    lowest_kept = float(actual_dets[keep_a, 4].min()) if keep_a else math.inf
    pairs, free, at_the_cut = [], set(keep_a), 0
    for row in keep_e:
        label = int(expected['labels'][image, row])
        candidates = [j for j in free if int(actual_labels[j]) == label]
        if not candidates:
            at_the_cut += 1
            if (float(expected['dets'][image, row, 4]) - lowest_kept <= SCORE_TOL
                    and at_the_cut <= max(1, MAX_DETECTIONS_AT_THE_CUT * len(keep_e))):
                continue
            report.problems.append(f'image {image}: PyTorch detection {row} (label {label}) has no onnxruntime '
                                   f'detection of the same label')
            return []
        distance = [float((actual_dets[j] - expected['dets'][image, row].double()).abs().max()) for j in candidates]
        best = candidates[int(np.argmin(distance))]
        free.remove(best)
        pairs.append((row, best))
    if at_the_cut:
        report.notes.append(f'image {image}: {at_the_cut} of {len(keep_e)} detections at the cut of the kept list '
                            f'(scores at most {lowest_kept:.6g}) differ between PyTorch and onnxruntime')
    return pairs


def _compare_detections(expected: Dict[str, Tensor], actual: Dict[str, np.ndarray], report: VerifyReport) -> None:
    box_diff, score_diff, worst_iou, total = 0.0, 0.0, 1.0, 0
    for image in range(expected['labels'].shape[0]):
        pairs = _match_detections(expected, actual, image, report)
        total += len(pairs)
        for row, col in pairs:
            e, a = expected['dets'][image, row].double(), torch.from_numpy(np.asarray(actual['dets'][image, col]))
            box_diff = max(box_diff, float((e[:4] - a[:4].double()).abs().max()))
            score_diff = max(score_diff, float((e[4] - a[4].double()).abs()))
            if 'masks' in expected:
                mask_e = expected['masks'][image, row]
                mask_a = torch.from_numpy(np.asarray(actual['masks'][image, col])) > 0.5
                union = int((mask_e | mask_a).sum())
                worst_iou = min(worst_iou, int((mask_e & mask_a).sum()) / union if union else 1.0)
    report.checks += [Check('box coordinates, max abs diff (px)', box_diff, BOX_TOL),
                      Check('scores, max abs diff', score_diff, SCORE_TOL)]
    if 'masks' in expected:
        report.checks.append(Check('masks, lowest IoU', worst_iou, MIN_MASK_IOU, higher_is_better=True))
    if total == 0 and not report.problems:
        report.notes.append('no detections on either side: only their absence was compared (random weights find '
                            'nothing above the score threshold; use a trained checkpoint and --image)')


def compare_outputs(task: str, expected: Dict[str, Tensor], actual: Dict[str, np.ndarray]) -> VerifyReport:
    """Compare the PyTorch model's outputs (:func:`torch_outputs`) with the graph's (:func:`onnx_outputs`)."""
    report = VerifyReport()
    missing = [name for name in expected if name not in actual]
    if missing:
        report.problems.append(f'the graph has no output {missing} (it has {sorted(actual)})')
        return report
    for name, value in expected.items():
        if task != 'mmdet' and tuple(value.shape) != tuple(np.shape(actual[name])):
            report.problems.append(f'{name}: shape {tuple(np.shape(actual[name]))} in the graph, '
                                  f'{tuple(value.shape)} in PyTorch')
    if report.problems:
        return report
    if task == 'mmpretrain':
        report.checks.append(Check('scores, max abs diff', _max_abs_diff(expected['scores'], actual['scores']),
                                   PROBABILITY_TOL))
    elif task == 'mmseg':
        report.checks.append(Check('seg_logits, max abs diff',
                                   _max_abs_diff(expected['seg_logits'], actual['seg_logits']), LOGIT_TOL))
    else:
        _compare_detections(expected, actual, report)
    return report


def verify_onnx(model: nn.Module, cfg, path: str, input: Tensor,  # noqa: A002
                provider: str = 'cpu') -> VerifyReport:
    """Run ``path`` in onnxruntime (on ``provider``, 'cpu' or 'cuda') and the model in PyTorch (CPU) on the same
    raw image batch, compare the outputs and check their shapes against the graph's declared ones."""
    session = inference_session(path, provider)
    actual = run_session(session, input)
    report = compare_outputs(task_of(cfg), torch_outputs(model, cfg, input), actual)
    returned = {INPUT_NAME: tuple(input.shape), **{name: np.shape(value) for name, value in actual.items()}}
    report.problems += shape_problems(declared_shapes(path), returned)
    return report


def load_image(cfg, image: str, shape: Optional[tuple] = None) -> Tensor:
    """An image file through the config's test pipeline (annotation loading left out): the packed ``inputs`` as
    a float32 batch (1, 3, H, W), the graph's input. ``shape`` (H, W), for a fixed-size graph, must match."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    from .exporter import config_test_pipeline
    init_default_scope(task_of(cfg))
    steps = [step for step in config_test_pipeline(cfg) if 'LoadAnnotations' not in str(step.get('type'))]
    packed = Compose(steps)(dict(img_path=image, img_id=0))
    input = packed['inputs'].float().unsqueeze(0)  # noqa: A001
    if shape is not None and tuple(input.shape[-2:]) != tuple(shape):
        raise InvalidSettingError(
            f'the test pipeline makes {image} {tuple(input.shape[-2:])} (H, W), but the graph was '
            f'exported at {tuple(shape)} without --dynamic: export with --shape '
            f'{input.shape[-2]} {input.shape[-1]} or --dynamic to check it on this image')
    return input


def second_size(shape: tuple) -> tuple:
    """Another input size for checking a dynamic graph: 32 px taller, 32 px narrower (wider if small)."""
    height, width = shape
    return height + 32, width - 32 if width > 64 else width + 32


def verify_inputs(cfg, shape: tuple, dynamic: bool, image: Optional[str] = None,
                  dynamic_batch: bool = True) -> List[tuple]:
    """(description, raw image batch) pairs to check an export of ``shape`` on: the image through the test
    pipeline, or a random image of ``shape``; a dynamic export also on a second random size (batch 2 where the
    graph allows)."""
    from .exporter import example_input
    if image:
        input = load_image(cfg, image, None if dynamic else shape)  # noqa: A001
        return [(f'{image} through the test pipeline ({input.shape[-2]}x{input.shape[-1]})', input)]
    inputs = [(f'a random {shape[0]}x{shape[1]} image', example_input(shape))]
    if dynamic:
        other, batch = second_size(shape), 2 if dynamic_batch else 1
        inputs.append((f'{batch} random {other[0]}x{other[1]} image{"s" if batch > 1 else ""}',
                       example_input(other, batch, seed=1)))
    return inputs
