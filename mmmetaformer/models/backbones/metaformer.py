"""The generic MetaFormer backbone: stem, four stages of blocks, a token mixer per stage built from the registry."""
import copy
import difflib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch._dynamo.config as dynamo_config
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import InvalidSettingError
from ...registry import MODELS, build_module
from ..layers import DropPath, Mlp, Scale, build_norm, scaled_residual
from ..layers.fast_paths import channels_first
from ..utils import NAMED_WEIGHTS, PretrainedFromAnyLayout, official_weights_url

NUM_STAGES = 4
COMPILED_VERSIONS_PER_STAGE = 8  # twice the four a stage takes (see _compile_blocks), for mixers of other kinds


class Stem(nn.Module):
    """Conv 7x7 stride 4 (padding 2), optionally followed by a channel norm; returns channels-last tokens."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: Optional[dict]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=4, padding=2)
        self.norm = build_norm(norm_cfg, out_channels) if norm_cfg else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # A channels_last input makes the conv output channels_last, so the permute below is free.
        x = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1))


class Downsampling(nn.Module):
    """Optional channel norm, then Conv 3x3 stride 2 (padding 1), on channels-last tokens."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: Optional[dict]) -> None:
        super().__init__()
        self.norm = build_norm(norm_cfg, in_channels) if norm_cfg else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MetaFormerBlock(nn.Module):
    """``x = res_scale(x) + layer_scale(drop_path(mixer(norm1(x))))``, then the same with ``norm2`` and the MLP."""

    def __init__(self, dim: int, token_mixer_cfg: dict, norm_cfg: dict, mlp_cfg: dict, drop_path: float = 0.0,
                 layer_scale_init_value: Optional[float] = None,
                 res_scale_init_value: Optional[float] = None) -> None:
        super().__init__()

        def scale() -> nn.Module:
            return Scale(dim, layer_scale_init_value) if layer_scale_init_value is not None else nn.Identity()

        def res_scale() -> nn.Module:
            return Scale(dim, res_scale_init_value) if res_scale_init_value is not None else nn.Identity()

        self.norm1 = build_norm(norm_cfg, dim)
        self.token_mixer = build_module(token_mixer_cfg, dim=dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale()
        self.res_scale1 = res_scale()
        self.norm2 = build_norm(norm_cfg, dim)
        self.mlp = Mlp(dim, **mlp_cfg)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale()
        self.res_scale2 = res_scale()

    def forward(self, x: Tensor) -> Tensor:
        x = self._residual(x, self.drop_path1(self.token_mixer(self.norm1(x))), self.layer_scale1, self.res_scale1)
        return self._residual(x, self.drop_path2(self.mlp(self.norm2(x))), self.layer_scale2, self.res_scale2)

    @staticmethod
    def _residual(x: Tensor, branch: Tensor, layer_scale: nn.Module, res_scale: nn.Module) -> Tensor:
        """``res_scale(x) + layer_scale(branch)``; see
        :func:`~mmmetaformer.models.layers.fast_paths.scaled_residual`."""
        return scaled_residual(x, branch, layer_scale.scale if isinstance(layer_scale, Scale) else None,
                               res_scale.scale if isinstance(res_scale, Scale) else None)


class MetaFormerStage(nn.Module):
    """Optional downsampling followed by a sequence of MetaFormer blocks."""

    def __init__(self, blocks: List[MetaFormerBlock], downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)


def _per_stage(value, name: str) -> list:
    """Expand a single setting to one per stage; check a per-stage list has one entry per stage."""
    if isinstance(value, (list, tuple)):
        if len(value) != NUM_STAGES:
            raise InvalidSettingError(
                f'{name} needs {NUM_STAGES} entries (one per stage), got {len(value)}: {value}')
        return [copy.deepcopy(v) for v in value]
    return [copy.deepcopy(value) for _ in range(NUM_STAGES)]


@MODELS.register_module()
class MetaFormer(PretrainedFromAnyLayout, BaseModule):
    """MetaFormer backbone for dense prediction and classification (mmdet/mmseg/mmpretrain conventions).

    Every published family is this class with an arch table (see :class:`PoolFormer` ... :class:`CAFormer`).

    Args:
        arch: dict with ``depths`` and ``dims`` (4 each), ``token_mixers`` (one config or 4), ``norm_cfg``
            (block norm, one or 4), ``mlp_cfg`` (``act_cfg``, ``bias``, ``mlp_ratio``), ``stem_norm_cfg`` and
            ``downsample_norm_cfg`` (None for no norm), ``layer_scale_init_values`` and ``res_scale_init_values``
            (one or 4; None disables the scale).
        in_channels: input channels.
        out_indices: stages (0-3) whose outputs are returned, as NCHW maps at strides 4/8/16/32.
        norm_outputs: add a fresh norm of the block type on each returned stage (the official dense-prediction
            setup). Only requested outputs get one, so DDP never sees unused parameters.
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and stages 1..k with their output norms
            (re-applied in ``train()``).
        norm_eval: keep BatchNorm layers (if a custom mixer has any) in eval mode during training. The stock
            MetaFormer norms have no running statistics, so this changes nothing for them.
        with_cp: gradient checkpointing of every block (``use_reentrant=False``).
        compile_blocks: compile each block and downsampling layer with ``torch.compile`` (regional compilation):
            True for the default options, or a dict of ``torch.compile`` arguments (e.g. ``dict(mode=
            'max-autotune')``). The compiler fuses the memory-bound work between the matrix products (norms,
            activations, scales), and a detector or segmentor keeps its heads eager, so their graph breaks cost
            nothing. The state dict is unchanged. Raises torch's limit of compiled versions per function
            (``torch._dynamo.config.recompile_limit``) to 32 where it is lower, so that every stage stays
            compiled through training at several input sizes and validation.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=PATH_OR_URL)``; every known checkpoint layout is
            detected and converted (see :mod:`mmmetaformer.models.utils`). A checkpoint of another architecture is an
            error unless ``strict=False`` is added (then only the matching tensors load). A published family at a
            published arch also takes its official weights by name: ``checkpoint='in1k'``, and for ConvFormer and
            CAFormer ``'in1k_384'``, ``'in21k'``, ``'in21ft1k'``, ``'in21ft1k_384'`` (see ``NAMED_WEIGHTS``).
    """
    arch_settings: Dict[str, dict] = {}
    ARCH_KEYS = ('depths', 'dims', 'token_mixers', 'norm_cfg', 'mlp_cfg', 'stem_norm_cfg', 'downsample_norm_cfg',
                 'layer_scale_init_values', 'res_scale_init_values')

    def __init__(self,
                 arch: Union[str, dict],
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 norm_outputs: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 compile_blocks: Union[bool, dict] = False,
                 drop_path_rate: float = 0.0,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_name = arch.lower() if isinstance(arch, str) else None
        arch = self._resolve_arch(arch)
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            self.checkpoint_location(init_cfg['checkpoint'])  # unpublished named weights fail here, not at init
        depths, dims = list(arch['depths']), list(arch['dims'])
        if len(depths) != NUM_STAGES or len(dims) != NUM_STAGES:
            raise InvalidSettingError(
                f'arch needs {NUM_STAGES} depths and dims, got depths={depths}, dims={dims}')
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not isinstance(i, int) or not 0 <= i < NUM_STAGES]
        if bad or not out_indices:
            raise InvalidSettingError(f'out_indices must be a non-empty subset of stages 0-{NUM_STAGES - 1}, '
                                      f'got {out_indices}')
        if not -1 <= frozen_stages <= NUM_STAGES:
            raise InvalidSettingError(f'frozen_stages must be in -1..{NUM_STAGES}, got {frozen_stages}')

        self.in_channels = in_channels
        self.depths, self.dims = depths, dims
        self.out_indices = tuple(sorted(set(out_indices)))
        self.norm_outputs = norm_outputs
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.feature_info = [dict(num_chs=dims[i], reduction=2**(i + 2), module=f'stages.{i}')
                             for i in range(NUM_STAGES)]

        mixers = _per_stage(arch['token_mixers'], 'token_mixers')
        norms = _per_stage(arch['norm_cfg'], 'norm_cfg')
        layer_scales = _per_stage(arch.get('layer_scale_init_values'), 'layer_scale_init_values')
        res_scales = _per_stage(arch.get('res_scale_init_values'), 'res_scale_init_values')
        mlp_cfg = dict(arch.get('mlp_cfg', {}))
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]

        self.stem = Stem(in_channels, dims[0], arch.get('stem_norm_cfg'))
        self.stages = nn.ModuleList()
        for i in range(NUM_STAGES):
            first = sum(depths[:i])
            blocks = [MetaFormerBlock(dims[i], mixers[i], norms[i], mlp_cfg, dpr[first + j], layer_scales[i],
                                      res_scales[i]) for j in range(depths[i])]
            downsample = Downsampling(dims[i - 1], dims[i], arch.get('downsample_norm_cfg')) if i else None
            self.stages.append(MetaFormerStage(blocks, downsample))
        if norm_outputs:
            self.out_norms = nn.ModuleDict({str(i): build_norm(norms[i], dims[i]) for i in self.out_indices})
        self._init_fresh_weights()
        self._freeze_stages()
        if compile_blocks:
            self._compile_blocks(compile_blocks if isinstance(compile_blocks, dict) else {})

    def _compile_blocks(self, options: dict) -> None:
        # Every block runs one forward function (and every downsampling layer another), and torch keeps at most
        # torch._dynamo.config.recompile_limit compiled versions of a function (8 by default) before it runs the
        # rest eagerly. Training at several input sizes and validating without gradients takes up to four per
        # stage (static and dynamic sizes, with and without gradients), and the limit is raised to twice that.
        # torch has no public setting of it. Pinned by the test
        # tests/test_engine/test_compile.py::test_compiled_blocks_stay_compiled_through_training_and_validation.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILED_VERSIONS_PER_STAGE * NUM_STAGES)
        for stage in self.stages:
            stage.downsample.compile(**options)
            for block in stage.blocks:
                block.compile(**options)

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                valid = ', '.join(sorted(cls.arch_settings)) or 'none: pass arch as a dict'
                close = difflib.get_close_matches(key, cls.arch_settings, n=1)
                hint = f' (did you mean {close[0]!r}?)' if close else ''
                raise InvalidSettingError(f'{cls.__name__} has no arch {arch!r}{hint}; valid archs: {valid}')
            return cls.arch_settings[key]
        if not isinstance(arch, dict):
            raise InvalidSettingError(f'arch must be a name or a dict, got {type(arch).__name__}')
        missing = {'depths', 'dims', 'token_mixers', 'norm_cfg'} - set(arch)
        unknown = set(arch) - set(cls.ARCH_KEYS)
        if missing or unknown:
            raise InvalidSettingError(f'{cls.__name__} arch dict: missing keys {sorted(missing)}, unknown keys '
                                      f'{sorted(unknown)}; allowed keys: {cls.ARCH_KEYS}')
        return arch

    def checkpoint_location(self, checkpoint: str) -> str:
        """Named official weights (``'in1k'``, ``'in21k'``, ...) resolve to the URL of this family and arch."""
        if checkpoint not in NAMED_WEIGHTS:
            return checkpoint
        if self.arch_name is None:
            raise InvalidSettingError(
                f'init_cfg checkpoint={checkpoint!r} names official weights, which exist only for the '
                f'published archs ({type(self).__name__} was built from an arch dict): give a '
                f'checkpoint path or URL instead')
        return official_weights_url(type(self).__name__.lower(), self.arch_name, checkpoint)

    def _init_fresh_weights(self) -> None:
        """The official initialization: truncated normal (std 0.02) for conv/linear weights, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.stem] + [self.stages[i] for i in range(self.frozen_stages)]
        if self.norm_outputs:  # a frozen stage's output norm is frozen with it
            frozen += [self.out_norms[str(i)] for i in range(self.frozen_stages) if str(i) in self.out_norms]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MetaFormer':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                # torch's private _BatchNorm: the one base class of BatchNorm1d/2d/3d, SyncBatchNorm and mmengine's
                # _BatchNormXd (torch has no public one). Pinned by tests/test_models/test_backbones.py::
                # test_norm_eval_keeps_batch_norms_of_custom_mixers_in_eval.
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__} expects a 4-D (N, C, H, W) image tensor, got {shape}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} was built for {self.in_channels} input channels '
                             f'(in_channels={self.in_channels}), got an input with {x.shape[1]} channels '
                             f'(shape {tuple(x.shape)})')

    def _run_blocks(self, blocks: nn.Sequential, x: Tensor) -> Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            for block in blocks:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        return blocks(x)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        self._check_input(x)
        x = self.stem(x)
        outs = []
        last = self.out_indices[-1]
        for i, stage in enumerate(self.stages):
            x = self._run_blocks(stage.blocks, stage.downsample(x))
            if i in self.out_indices:
                out = self.out_norms[str(i)](x) if self.norm_outputs else x
                outs.append(channels_first(out))  # NCHW, as the necks take it
            if i == last:
                break
        return tuple(outs)
