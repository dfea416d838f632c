"""Side-by-side speed and memory of mmmetaformer against other implementations of the same models.

The comparisons, each a *mode* in :data:`MODES`:

- backbones (``inference``, ``train``): ours beside timm's implementation of the same model, from the same weights;
  both compute the four stages (timm ``forward_features``, ours ``out_indices=(3,)`` without output norm).
  IdentityFormer and RandFormer, which timm does not name, are timm's PoolFormerV2 with their token mixers
  (:func:`timm_reference`);
- ``dense``: the backbones' training step with all four stage outputs at the detectors' input size (timm
  ``features_only``);
- ``whole``: RetinaNet / Mask R-CNN / Semantic FPN with our PoolFormer beside the same config with mmpretrain's
  ``PoolFormer`` backbone, with identical weights (mmpretrain's are converted to ours);
- ``startup``: the time the fast paths spend timing their forms in our first training step, beside one training
  step.

A training step is forward, loss, backward and an AdamW step. The two sides' steps alternate in one process, so
drifting machine load hits both alike, and the median step time is reported. Peak memory is the most memory that
tensors allocated during one more step of each side held at once (CUDA: the allocator's peak; CPU: the profiler's
allocation events), on top of the weights, the input and the optimizer state.

A new mode is a function ``(options, setting) -> rows`` registered in :data:`MODES`; it can reuse
:func:`median_step_times`, :func:`peak_memory_mb` and :func:`compare`.
"""
import copy
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import InvalidSettingError
from ..utils.package_files import config_file
from ..utils.streams import silenced_descriptor

Step = Callable[[], None]
# One model of each family (timm builds IdentityFormer and RandFormer as PoolFormerV2 with other token mixers).
TIMM_MODELS = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
               'caformer_s18']
# The dense-prediction input of the detectors' published setup: four stage outputs of a 2x3x800x1333 batch.
DENSE_BATCH, DENSE_SIZE = 2, (800, 1333)
# Whole models and the config each is built from (names relative to the packaged configs/).
WHOLE_MODELS = {
    'retinanet': 'mmdet/retinanet_poolformer_s12_1x.py',
    'mask_rcnn': 'mmdet/mask_rcnn_poolformer_s12_1x.py',
    'semantic_fpn': 'mmseg/fpn_poolformer_s12_40k_ade20k.py',
}
# The published training input sizes (height, width): COCO 1x (800x1333) and ADE20K crops (512x512).
PUBLISHED_SIZES = {'retinanet': (800, 1333), 'mask_rcnn': (800, 1333), 'semantic_fpn': (512, 512)}


@dataclass
class Setting:
    """How a row runs: device, precision (``fp32`` or autocast ``fp16``/``bf16``), memory format, compilation
    (``compiled``: both sides with ``torch.compile``; ``compiled_blocks``: ours with ``compile_blocks=True``, the
    reference eager), and the ``torch.compile`` backend of both."""
    device: str = 'cpu'
    precision: str = 'fp32'
    channels_last: bool = False
    compiled: bool = False
    compiled_blocks: bool = False
    compile_backend: str = 'inductor'

    @property
    def compile_blocks(self) -> Union[bool, dict]:
        """The ``compile_blocks`` argument of our backbone in this row."""
        return dict(backend=self.compile_backend) if self.compiled_blocks else False

    def autocast(self):
        if self.precision == 'fp32':
            return nullcontext()
        return torch.autocast(self.device, dtype=getattr(torch, {'fp16': 'float16', 'bf16': 'bfloat16'}[
            self.precision]))

    def describe(self) -> str:
        parts = [self.device, self.precision]
        if self.channels_last:
            parts.append('channels-last')
        parts.append('compiled' if self.compiled else 'blocks-compiled' if self.compiled_blocks else 'eager')
        return ' '.join(parts)


@dataclass
class Options:
    """What to measure (the command-line options of ``tools/benchmark.py``)."""
    models: Sequence[str] = field(default_factory=lambda: list(TIMM_MODELS))
    whole_models: Sequence[str] = ('retinanet', 'semantic_fpn')
    batch_size: int = 8
    size: int = 224
    whole_batch_size: int = 2
    whole_size: Optional[Tuple[int, int]] = None  # None: each whole model's published size
    iters: int = 10
    warmup: int = 3
    memory: bool = True
    profile: int = 0  # > 0: print the top operators of each side's step (torch.profiler)


@dataclass
class Row:
    """One comparison: images per second and peak memory (MiB) of ours and of the reference implementation."""
    model: str
    mode: str
    setting: Setting
    reference: str
    ours_rate: float
    reference_rate: float
    ours_peak_mb: Optional[float] = None
    reference_peak_mb: Optional[float] = None

    @property
    def ratio(self) -> float:
        return self.ours_rate / self.reference_rate

    @property
    def fp32_math(self) -> str:
        """The math of the channel layers' float32 products, ours/reference: ``ieee`` or ``tf32`` (``-`` under
        autocast). Our channel Linears are matrix products, so they use TF32 only where
        ``torch.backends.cuda.matmul.allow_tf32`` allows it; the reference computes its MLPs as 1x1 convolutions
        (timm's and mmpretrain's channels-first blocks), which cuDNN runs in TF32 while
        ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default)."""
        if self.setting.precision != 'fp32':
            return '-'
        if self.setting.device != 'cuda':
            return 'ieee/ieee'
        matmul = 'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'
        conv = 'tf32' if torch.backends.cudnn.allow_tf32 else 'ieee'
        return f'{matmul}/{conv}'


# ------------------------------------------------------------------------------------------------ measuring
def _synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def median_step_times(steps: Dict[str, Step], iters: int, warmup: int, device: str = 'cpu') -> Dict[str, float]:
    """Median seconds per call of each step; the steps run interleaved (a, b, a, b, ...) after ``warmup`` calls
    each."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {key: [] for key in steps}
    for _ in range(iters):
        for key, step in steps.items():
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def peak_memory_mb(step: Step, device: str = 'cpu') -> float:
    """The most memory (MiB) that tensors allocated during one call of ``step`` held at the same time."""
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with silenced_descriptor(2), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()  # (the profiler writes its start, stop and a CUDA probe to the standard error on every run)
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def print_profile(name: str, step: Step, device: str, top: int) -> None:
    """Print the ``top`` operators of one call of ``step`` by their own time on ``device`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
    with profile(activities=activities) as prof:
        step()
        _synchronize(device)
    sort_by = 'self_cuda_time_total' if device == 'cuda' else 'self_cpu_time_total'
    print(f'--- profile: {name}', flush=True)
    print(prof.key_averages().table(sort_by=sort_by, row_limit=top), flush=True)


def compare(model: str, mode: str, setting: Setting, reference: str, steps: Dict[str, Step], images: int,
            options: Options) -> Row:
    """Time (and measure the memory of) ``steps['ours']`` and ``steps[reference]`` side by side."""
    seconds = median_step_times(steps, options.iters, options.warmup, setting.device)
    if options.profile:
        for key, step in steps.items():
            print_profile(f'{model} {mode} {setting.describe()} {key}', step, setting.device, options.profile)
    peaks = {key: peak_memory_mb(step, setting.device) for key, step in steps.items()} if options.memory else {}
    return Row(model, mode, setting, reference, images / seconds['ours'], images / seconds[reference],
               peaks.get('ours'), peaks.get(reference))


# glibc's mallopt parameters and the largest mmap threshold it accepts on 64-bit systems (half its 64 MiB heap).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST_MMAP_THRESHOLD = 32 * 2**20


def keep_freed_memory() -> None:
    """Make glibc's ``malloc`` keep freed memory for reuse, for the rest of the process: blocks up to 32 MiB come
    from the heap instead of fresh ``mmap`` s, and the top of the heap is not given back to the system.

    With glibc's defaults, whether a step's temporaries land on pages already mapped or on fresh ones (a page fault
    and zero-filling per 4 KiB) depends on the sizes freed earlier in the process, so a side's speed depends on
    which rows and which steps ran before it; a side that allocates more pays more. With freed memory kept, neither
    side pays for fresh pages and the ratios compare the computation alone, as under a caching allocator (jemalloc,
    tcmalloc) or ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set at start.

    Raises:
        InvalidSettingError: the C library has no ``mallopt`` (not glibc) or refuses the settings.
    """
    import ctypes
    mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)
    if mallopt is None:
        raise InvalidSettingError('keeping freed memory needs glibc (mallopt); this C library has none')
    if not (mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, 2**30)):
        raise InvalidSettingError('the C library refused the mallopt settings that keep freed memory')


# ------------------------------------------------------------------------------------------------ steps
def inference_step(module: nn.Module, forward: Callable, inputs, setting: Setting) -> Step:
    module.eval()

    def step():
        with torch.inference_mode(), setting.autocast():
            forward(inputs)
    return step


def training_step(module: nn.Module, loss_fn: Callable[[], Tensor], setting: Setting) -> Step:
    """Forward and loss (``loss_fn``), backward and an AdamW step; fp16 autocast gets a gradient scaler."""
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-6)
    scaler = torch.amp.GradScaler(setting.device) if setting.precision == 'fp16' else None

    def step():
        with setting.autocast():
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    return step


def _prepare(module: nn.Module, setting: Setting) -> nn.Module:
    module = module.to(setting.device)
    return module.to(memory_format=torch.channels_last) if setting.channels_last else module


def _maybe_compile(module: nn.Module, setting: Setting) -> nn.Module:
    return torch.compile(module, backend=setting.compile_backend) if setting.compiled else module


# ------------------------------------------------------------------------------------------------ backbones
def build_backbone(name: str, **kwargs) -> nn.Module:
    """Our backbone of a model name such as ``caformer_s18``, built with ``kwargs``."""
    from ..models import FAMILIES
    family, _, arch = name.partition('_')
    if family not in FAMILIES:
        raise InvalidSettingError(f'unknown model {name!r}; families: {", ".join(FAMILIES)}')
    return FAMILIES[family](arch=arch, **kwargs)


class TokenMatrixMixing(nn.Module):
    """RandFormer's token mixer in timm's channels-first blocks, as the paper writes it: a frozen N x N matrix
    multiplied over the N = H*W tokens of each channel (timm has no RandFormer). timm builds a mixer from its
    width alone, so the matrix comes afterwards, from :meth:`load_matrix`."""

    def __init__(self, dim: int, **kwargs) -> None:
        super().__init__()
        self.register_buffer('random_matrix', None)

    def load_matrix(self, matrix: Tensor) -> None:
        """Mix with ``matrix`` (N x N, row i the weights of the input tokens in output token i) from now on."""
        self.random_matrix = matrix.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        if self.random_matrix is None:
            raise RuntimeError('TokenMatrixMixing has no matrix yet: call load_matrix() first')
        batch, channels, height, width = x.shape
        return torch.matmul(x.reshape(batch, channels, height * width), self.random_matrix.t()).reshape(x.shape)


def timm_reference(name: str) -> nn.Module:
    """timm's model of a backbone name, without a head: timm's own model where timm has the family, else timm's
    ``MetaFormer`` built as the paper builds the family from PoolFormerV2 (IdentityFormer: identity token mixers;
    RandFormer: identity in stages 1-2, :class:`TokenMatrixMixing` in stages 3-4)."""
    import timm
    family, _, arch = name.partition('_')
    mixers = {'identityformer': nn.Identity, 'randformer': [nn.Identity, nn.Identity] + [TokenMatrixMixing] * 2}
    if family not in mixers:
        return timm.create_model(name, pretrained=False, num_classes=0)
    return timm.create_model(f'poolformerv2_{arch}', pretrained=False, num_classes=0, token_mixers=mixers[family])


def _random_mixing_grids(name: str, size: int) -> List[Tuple[int, int]]:
    """The token grid each RandomMixing mixer of a backbone sees on a ``size`` x ``size`` input, in module order."""
    from ..models.layers import RandomMixing
    model = build_backbone(name, out_indices=(3, ), norm_outputs=False)  # eager: only the shapes are wanted
    grids: List[Tuple[int, int]] = []

    def record(mixer: nn.Module, args: tuple) -> None:
        grids.append(tuple(args[0].shape[1:3]))  # the mixers take (B, H, W, C)

    for module in model.modules():
        if isinstance(module, RandomMixing):
            module.register_forward_pre_hook(record)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return grids


def build_backbone_pair(name: str, compile_blocks: Union[bool, dict] = False,
                        size: int = 224) -> Tuple[nn.Module, nn.Module]:
    """Our backbone (four stages, no output norm; its blocks compiled with ``compile_blocks``) and timm's model of
    the same name (:func:`timm_reference`) for a ``size`` x ``size`` input, with the same random weights (a
    RandFormer's mixing matrices: ours, resampled to the input's grids as our mixers do)."""
    from ..models.layers import RandomMixing
    from ..models.utils import to_canonical
    ours = build_backbone(name, out_indices=(3, ), norm_outputs=False, compile_blocks=compile_blocks)
    reference = timm_reference(name)
    mixers = [module for module in reference.modules() if isinstance(module, TokenMatrixMixing)]
    canonical, _, _ = to_canonical(reference.state_dict())
    ours.load_state_dict({k[len('backbone.'):]: v for k, v in canonical.items() if k.startswith('backbone.')},
                         strict=not mixers)
    if mixers:  # a RandFormer keeps its own mixing matrices; timm's take them, resampled to the input's grids
        ours_mixers = [module for module in ours.modules() if isinstance(module, RandomMixing)]
        for mixer, ours_mixer, grid in zip(mixers, ours_mixers, _random_mixing_grids(name, size), strict=True):
            mixer.load_matrix(ours_mixer.mixing_matrix(*grid))
    return ours, reference


def backbone_rows(options: Options, setting: Setting, train: bool) -> Iterator[Row]:
    for name in options.models:
        ours, reference = (_prepare(m, setting) for m in build_backbone_pair(name, setting.compile_blocks,
                                                                                      options.size))
        x = torch.randn(options.batch_size, 3, options.size, options.size, device=setting.device)
        if setting.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        forwards = {'ours': (ours, lambda m: (lambda inputs: m(inputs)[0])),
                    'timm': (reference, lambda m: m.forward_features)}
        steps = {}
        for key, (module, forward_of) in forwards.items():
            forward = forward_of(_maybe_compile(module, setting))
            if train:
                steps[key] = training_step(module, lambda f=forward: f(x).float().mean(), setting)
            else:
                steps[key] = inference_step(module, forward, x, setting)
        yield compare(name, 'train' if train else 'inference', setting, 'timm', steps, options.batch_size, options)


def startup_rows(options: Options, setting: Setting) -> Iterator[Row]:
    """The start-up cost of the fast paths' form timing against a training step of our backbone: ``ours`` is the
    batch over the seconds that choosing the measured forms took in the first training step (fresh choices),
    ``one step`` the batch over the median training step afterwards. A ratio above 1: the timing cost less than
    one step (``inf``: nothing was timed, e.g. with ``MMMETAFORMER_FAST_PATH_MEASURE=0``)."""
    from ..models.layers import fast_paths
    for name in options.models:
        ours = _prepare(build_backbone(name, out_indices=(3, ), norm_outputs=False,
                                       compile_blocks=setting.compile_blocks), setting)
        x = torch.randn(options.batch_size, 3, options.size, options.size, device=setting.device)
        forward = _maybe_compile(ours, setting)
        step = training_step(ours, lambda: forward(x)[0].float().mean(), setting)
        fast_paths.forget_measured_forms()
        step()
        measuring = fast_paths.measuring_seconds()
        seconds = median_step_times({'ours': step}, options.iters, options.warmup, setting.device)['ours']
        yield Row(name, 'startup', setting, 'one step', options.batch_size / measuring if measuring else math.inf,
                  options.batch_size / seconds)


def dense_rows(options: Options, setting: Setting) -> Iterator[Row]:
    """Training steps of the four stage outputs (with our output norms; timm ``features_only``) of a
    ``DENSE_BATCH`` x 3 x 800 x 1333 batch: the backbone's work in a detector at the published input size. Both
    sides have their own random weights (speed does not depend on them)."""
    import timm

    height, width = options.whole_size or DENSE_SIZE
    for name in options.models:
        ours = build_backbone(name, out_indices=(0, 1, 2, 3), compile_blocks=setting.compile_blocks)
        reference = timm.create_model(name, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
        x = torch.randn(DENSE_BATCH, 3, height, width, device=setting.device)
        if setting.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        steps = {}
        for key, module in (('ours', ours), ('timm', reference)):
            module = _prepare(module, setting)
            forward = _maybe_compile(module, setting)
            steps[key] = training_step(
                module, lambda f=forward: sum(out.float().mean() for out in f(x)), setting)
        yield compare(f'{name} {height}x{width}', 'dense', setting, 'timm', steps, DENSE_BATCH, options)


# ------------------------------------------------------------------------------------------------ whole models
def _mmpretrain_backbone(ours_cfg: dict) -> dict:
    """The same backbone as mmpretrain's PoolFormer (its out_indices count the downsamplings too)."""
    return dict(type='mmpretrain.PoolFormer', arch=ours_cfg['arch'],
                out_indices=tuple(2 * i for i in ours_cfg['out_indices']), drop_path_rate=0.0, frozen_stages=0)


def build_whole_pair(name: str, compile_blocks: Union[bool, dict] = False) -> Tuple[nn.Module, nn.Module]:
    """A whole mm model (see :data:`WHOLE_MODELS`) with our PoolFormer (its blocks compiled with
    ``compile_blocks``), and the same model with mmpretrain's PoolFormer, both with the same weights (mmpretrain's
    random ones, converted to our layout)."""
    import mmpretrain.models  # noqa: F401  (registers mmpretrain.PoolFormer)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from ..models.utils import to_canonical
    scope = 'mmseg' if name == 'semantic_fpn' else 'mmdet'
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    if scope == 'mmdet':
        import mmdet.models  # noqa: F401
    else:
        import mmseg.models  # noqa: F401
    cfg = Config.fromfile(config_file(WHOLE_MODELS[name]))
    cfg.model.backbone.init_cfg = None
    if scope == 'mmseg':  # one process, no process group: plain BatchNorm
        cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    reference_cfg = copy.deepcopy(cfg.model)
    reference_cfg.backbone = _mmpretrain_backbone(cfg.model.backbone)
    cfg.model.backbone.compile_blocks = compile_blocks
    torch.manual_seed(0)
    reference = registry.build(reference_cfg)
    ours = registry.build(cfg.model)
    canonical, _, _ = to_canonical({f'backbone.{k}': v for k, v in reference.backbone.state_dict().items()})
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith('backbone.')}
    for key, value in canonical.items():
        # mmpretrain's classifiers use the last output norm (norm6) as the head's norm: here it is stage 4's
        state[key.replace('head.norm.', 'backbone.out_norms.3.')] = value
    ours.load_state_dict(state)
    return ours, reference


def synthetic_batch(model: nn.Module, name: str, batch_size: int, height: int, width: int, seed: int = 0) -> dict:
    """A preprocessed training batch of random images and annotations (boxes, masks or a label map) for a whole
    model of :data:`WHOLE_MODELS`, as its data preprocessor makes it from the data pipeline's output."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for index in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator))
        meta = dict(img_id=index, img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0))
        if name == 'semantic_fpn':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, height, width), generator=generator))
        else:
            sample = _detection_sample(meta, height, width, name == 'mask_rcnn', generator)
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)


def _detection_sample(meta: dict, height: int, width: int, with_mask: bool, generator: torch.Generator,
                      num_boxes: int = 8):
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    size = torch.tensor([width, height], dtype=torch.float32)
    corner = torch.rand(num_boxes, 2, generator=generator) * 0.7 * size
    extent = (0.05 + 0.25 * torch.rand(num_boxes, 2, generator=generator)) * size
    boxes = torch.cat([corner, corner + extent], dim=1)
    instances = InstanceData(bboxes=HorizontalBoxes(boxes),
                             labels=torch.randint(0, 80, (num_boxes, ), generator=generator))
    if with_mask:
        masks = np.zeros((num_boxes, height, width), dtype=np.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
            mask[y1:y2, x1:x2] = 1
        instances.masks = BitmapMasks(masks, height, width)
    sample = DetDataSample(metainfo=meta)
    sample.gt_instances = instances
    return sample


def whole_model_rows(options: Options, setting: Setting) -> Iterator[Row]:
    for name in options.whole_models:
        height, width = options.whole_size or PUBLISHED_SIZES[name]
        ours, reference = (_prepare(m, setting) for m in build_whole_pair(name, setting.compile_blocks))
        steps = {}
        for key, model in (('ours', ours), ('mmpretrain', reference)):
            data = synthetic_batch(model, name, options.whole_batch_size, height, width)
            model.backbone = _maybe_compile(model.backbone, setting)

            def loss(model=model, data=data) -> Tensor:
                total, _ = model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))
                return total
            steps[key] = training_step(model, loss, setting)
        yield compare(f'{name}_poolformer_s12 {height}x{width}', 'train', setting, 'mmpretrain', steps,
                      options.whole_batch_size, options)


# Every mode: (options, setting) -> rows. Add a mode by registering its function here.
MODES: Dict[str, Callable[[Options, Setting], Iterable[Row]]] = {
    'inference': lambda options, setting: backbone_rows(options, setting, train=False),
    'train': lambda options, setting: backbone_rows(options, setting, train=True),
    'dense': dense_rows,
    'startup': startup_rows,
    'whole': whole_model_rows,
}


def format_row(row: Row) -> str:
    def mb(value: Optional[float]) -> str:
        return '-' if value is None else f'{value:.0f}'
    return (f'{row.model:<34}{row.mode:<11}{row.setting.describe():<40}{row.reference:<12}{row.ours_rate:>9.2f}'
            f'{row.reference_rate:>9.2f}{row.ratio:>8.2f}x{mb(row.ours_peak_mb):>10}{mb(row.reference_peak_mb):>10}'
            f'  {row.fp32_math}')


HEADER = (f"{'model':<34}{'mode':<11}{'setting':<40}{'reference':<12}{'ours':>9}{'ref':>9}{'ratio':>9}"
          f"{'ours MiB':>10}{'ref MiB':>10}  fp32 math (ours/ref)")
