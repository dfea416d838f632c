"""Smoke tests of the side-by-side benchmark (tiny sizes, one iteration): it runs, measures both sides, and compares
the same models. Timings themselves are not tested."""
import math
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mmmetaformer.apis.benchmark import (
    MODES,
    WHOLE_MODELS,
    Options,
    Row,
    Setting,
    TokenMatrixMixing,
    build_backbone_pair,
    build_whole_pair,
    keep_freed_memory,
    median_step_times,
    synthetic_batch,
    training_step,
)
from mmmetaformer.errors import InvalidSettingError
from mmmetaformer.models.layers.fast_paths import use_fast_paths
from e2e import run_tool, run_tool_here, tool_env

TINY = dict(batch_size=1, size=64, whole_batch_size=1, whole_size=(64, 96), iters=1, warmup=0)


def assert_ratio_of_rounded(numerator: float, denominator: float, ratio: float, step: float) -> None:
    """``ratio`` (printed to 0.01) is the ratio of the unrounded numbers that print as ``numerator`` and
    ``denominator`` (printed to ``step``)."""
    low = (numerator - step / 2) / (denominator + step / 2)
    high = (numerator + step / 2) / (denominator - step / 2) if denominator > step / 2 else float('inf')
    assert low - 0.005 <= ratio <= high + 0.005, (numerator, denominator, ratio)


def check(row):
    assert row.ours_rate > 0 and row.reference_rate > 0
    assert row.ours_peak_mb > 0 and row.reference_peak_mb > 0


def test_backbone_training_row_measures_both_sides():
    rows = list(MODES['train'](Options(models=['poolformerv2_s12'], **TINY), Setting()))
    assert [(r.model, r.mode, r.reference) for r in rows] == [('poolformerv2_s12', 'train', 'timm')]
    check(rows[0])


def test_startup_row_sets_the_form_timing_against_a_training_step():
    with use_fast_paths(measure=True):
        row, = MODES['startup'](Options(models=['convformer_s18'], **TINY), Setting())
    assert (row.model, row.mode, row.reference) == ('convformer_s18', 'startup', 'one step')
    assert 0 < row.ours_rate < math.inf and row.reference_rate > 0  # both channel Linears and depthwise convs timed
    with use_fast_paths(measure=False):
        row, = MODES['startup'](Options(models=['convformer_s18'], **TINY), Setting())
    assert row.ours_rate == math.inf and row.reference_rate > 0  # nothing timed


@pytest.mark.parametrize('name, size', [('identityformer_s12', 64), ('randformer_s12', 224), ('randformer_s12', 96)])
def test_timm_builds_the_families_it_lacks_from_its_metaformer(name, size):
    """IdentityFormer and RandFormer against timm's MetaFormer with their token mixers: the same four stages from
    the same weights, a RandFormer's mixing matrices resampled to the input's grids on both sides."""
    ours, reference = build_backbone_pair(name, size=size)
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], reference.forward_features(x), rtol=1e-4, atol=1e-4)
    matrices = [module.random_matrix for module in reference.modules() if isinstance(module, TokenMatrixMixing)]
    assert [m.shape[0] for m in matrices] == ([] if name == 'identityformer_s12' else
                                              [(size // 16) ** 2] * 6 + [(size // 32) ** 2] * 2)


def test_token_matrix_mixing_needs_its_matrix():
    with pytest.raises(RuntimeError, match=r'call load_matrix\(\) first'):
        TokenMatrixMixing(8)(torch.zeros(1, 8, 2, 2))


def test_unknown_models_are_named():
    with pytest.raises(ValueError, match=r"unknown model 'metaformer_s12'; families: poolformer, .*caformer"):
        build_backbone_pair('metaformer_s12')


def test_settings_describe_their_row():
    assert Setting().describe() == 'cpu fp32 eager'
    assert Setting('cuda', 'fp16', channels_last=True).describe() == 'cuda fp16 channels-last eager'
    assert Setting('cuda', 'bf16', channels_last=True, compiled=True).describe() == \
        'cuda bf16 channels-last compiled'
    assert Setting(compiled_blocks=True, compile_backend='aot_eager').describe() == 'cpu fp32 blocks-compiled'
    assert Setting(compiled_blocks=True, compile_backend='aot_eager').compile_blocks == dict(backend='aot_eager')
    assert Setting(compiled=True).compile_blocks is False


@pytest.fixture
def tf32_switches():
    """Set torch's TF32 switches (matmul, cudnn) in a test; the process's values come back afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    def set_switches(matmul: bool, cudnn: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    yield set_switches
    set_switches(*saved)


@pytest.mark.parametrize('matmul, cudnn, expected', [(True, True, 'tf32/tf32'), (False, True, 'ieee/tf32'),
                                                      (False, False, 'ieee/ieee')])
def test_fp32_math_of_gpu_rows_follows_the_tf32_switches(matmul, cudnn, expected, tf32_switches):
    """The column is read from torch's switches; no GPU is needed to build the row."""
    tf32_switches(matmul, cudnn)
    row = Row('caformer_s18', 'train', Setting('cuda'), 'timm', 2.0, 1.0)
    assert row.fp32_math == expected
    assert Row('caformer_s18', 'train', Setting(), 'timm', 2.0, 1.0).fp32_math == 'ieee/ieee'  # the CPU: no TF32
    assert Row('caformer_s18', 'train', Setting('cuda', 'bf16'), 'timm', 2.0, 1.0).fp32_math == '-'


def test_step_times_warm_each_step_up_then_interleave_the_timed_calls():
    calls = []
    steps = {'ours': lambda: calls.append('ours'), 'timm': lambda: calls.append('timm')}
    seconds = median_step_times(steps, iters=3, warmup=2)
    assert calls == ['ours', 'ours', 'timm', 'timm'] + ['ours', 'timm'] * 3
    assert set(seconds) == {'ours', 'timm'} and all(value >= 0 for value in seconds.values())


@pytest.mark.parametrize('scale, skipped', [(1.0, False), (1e36, True)])
def test_fp16_training_step_skips_an_update_whose_scaled_gradients_overflow(scale, skipped):
    """fp16 autocast steps go through a gradient scaler: gradients that overflow once scaled (65536x) skip the
    optimizer step instead of writing inf into the weights."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    before = layer.weight.detach().clone()
    x = torch.randn(3, 4)
    training_step(layer, lambda: (layer(x).float() * scale).mean(), Setting(precision='fp16'))()
    assert torch.isfinite(layer.weight).all()
    assert torch.equal(layer.weight, before) == skipped


def test_channels_last_rows_of_the_backbones_and_the_dense_mode():
    options = Options(models=['poolformerv2_s12'], memory=False, **dict(TINY, whole_size=(32, 32)))
    setting = Setting(channels_last=True)
    rows = list(MODES['inference'](options, setting)) + list(MODES['dense'](options, setting))
    assert [(r.model, r.mode, r.setting.describe(), r.reference) for r in rows] == [
        ('poolformerv2_s12', 'inference', 'cpu fp32 channels-last eager', 'timm'),
        ('poolformerv2_s12 32x32', 'dense', 'cpu fp32 channels-last eager', 'timm')]
    assert all(r.ours_rate > 0 and r.reference_rate > 0 and r.ours_peak_mb is None for r in rows)


def test_mask_rcnn_batch_has_a_mask_filling_each_box():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmmetaformer.utils.package_files import config_file
    init_default_scope('mmdet')
    preprocessor = MMDET_MODELS.build(Config.fromfile(config_file(WHOLE_MODELS['mask_rcnn'])).model.data_preprocessor)
    data = synthetic_batch(SimpleNamespace(data_preprocessor=preprocessor), 'mask_rcnn', 2, 40, 56)
    assert data['inputs'].shape == (2, 3, 64, 64)  # padded to a multiple of 32
    for sample in data['data_samples']:
        boxes, masks = sample.gt_instances.bboxes, sample.gt_instances.masks
        assert len(boxes) == len(masks) == 8 and (masks.height, masks.width) == (64, 64)
        for mask, (x1, y1, x2, y2) in zip(masks.masks, boxes.long().tolist()):
            assert 0 <= x1 < x2 <= 56 and 0 <= y1 < y2 <= 40
            assert mask[y1:y2, x1:x2].all() and mask.sum() == (x2 - x1) * (y2 - y1)


@pytest.mark.e2e
def test_whole_detector_pair_is_the_same_model():
    ours, reference = build_whole_pair('retinanet')
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    losses = []
    for model in (ours, reference):
        data = synthetic_batch(model, 'retinanet', 1, 64, 96)
        model.train()
        with torch.no_grad():
            losses.append(model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.e2e
def test_whole_segmentor_row():  # the detector runs the same code, and its pair is checked above
    rows = list(MODES['whole'](Options(whole_models=['semantic_fpn'], **TINY), Setting()))
    assert [(r.model, r.reference) for r in rows] == [('semantic_fpn_poolformer_s12 64x96', 'mmpretrain')]
    check(rows[0])


@pytest.mark.e2e
def test_tool_prints_a_row():
    result = run_tool(['tools/benchmark.py', '--modes', 'train', '--models', 'poolformer_s12', '--device', 'cpu',
                       '--batch-size', '1', '--size', '64', '--iters', '1', '--warmup', '0', '--steady-heap'])
    row, = [line.split() for line in result.stdout.splitlines() if line.startswith('poolformer_s12')]
    # model, mode, setting (words), reference, ours img/s, reference img/s, ratio, two peak memories, the fp32
    # math of each side
    (model, mode), (reference, ours, theirs, ratio, ours_mb, theirs_mb), math = row[:2], row[-7:-1], row[-1]
    assert (model, mode, reference, math) == ('poolformer_s12', 'train', 'timm', 'ieee/ieee')
    assert float(ours) > 0 and float(theirs) > 0 and float(ours_mb) > 0 and float(theirs_mb) > 0
    assert_ratio_of_rounded(float(ours), float(theirs), float(ratio.rstrip('x')), 0.01)
    assert 'heap: freed memory kept (--steady-heap)' in result.stdout.splitlines()[0]
    assert 'profiler_start' not in result.stderr and 'gpuGetDeviceCount' not in result.stderr  # kineto is quiet


# Faults of fresh pages in ten steps that each allocate and free 72 MiB in tensors of 8 to 24 MiB. With glibc's
# defaults the top of the heap may go back to the system after each step, and the next step faults its pages again.
# With freed memory kept, the heap grows while the tensors land in new places among the small blocks that torch
# leaves between them (in 190 runs here: 8 to 24 MiB of growth, always by the third step), then stays.
FRESH_PAGES_PER_STEP = """
import resource
import torch
from mmmetaformer.apis.benchmark import keep_freed_memory
keep_freed_memory()


def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.ones(mib * 2**18) for mib in (8, 16, 24, 16, 8)]
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


print(*[faults_of_a_step() for _ in range(10)])
"""


@pytest.mark.skipif(sys.platform != 'linux', reason='glibc')
def test_kept_freed_memory_spares_later_steps_fresh_pages():
    result = subprocess.run([sys.executable, '-c', FRESH_PAGES_PER_STEP], capture_output=True, text=True,
                            env=tool_env(), timeout=120, check=True)
    faults = [int(count) for count in result.stdout.split()]
    assert faults[0] > 72 * 256 // 2, faults  # the first step maps its pages (4 KiB each)
    assert sum(faults[1:]) < 72 * 256 // 2, faults  # the later steps together map less than half a step
    assert sum(faults[5:]) < 256, faults  # and the last five nothing


@pytest.mark.parametrize('c_library, message', [(SimpleNamespace(), 'needs glibc'),
                                                 (SimpleNamespace(mallopt=lambda option, value: 0), 'refused')])
def test_keeping_freed_memory_needs_glibc_and_its_consent(monkeypatch, c_library, message):
    import ctypes
    monkeypatch.setattr(ctypes, 'CDLL', lambda name: c_library)
    with pytest.raises(InvalidSettingError, match=message):
        keep_freed_memory()


# The end of a printed row: ours and the reference in img/s, their ratio, the two peak memories in MiB ('-': none),
# the fp32 math of each side.
NUMBERS = re.compile(r'\s(?P<ours>[\d.]+)\s+(?P<reference>[\d.]+)\s+(?P<ratio>[\d.]+)x\s+(?P<ours_mb>\S+)\s+'
                     r'(?P<reference_mb>\S+)\s+(?P<math>-|(?:ieee|tf32)/(?:ieee|tf32))$')
TINY_TOOL = ['--device', 'cpu', '--batch-size', '1', '--size', '32', '--whole-size', '32', '32', '--iters', '1',
             '--warmup', '0']


def printed_rows(printed: str) -> dict:
    """(model, mode, setting) -> the numbers of each row the benchmark tool printed."""
    rows = {}
    for line in printed.splitlines():
        numbers = NUMBERS.search(line)
        if numbers and not line.startswith('---'):
            model, mode, setting = re.split(r'\s{2,}', line[:numbers.start()].strip())[:3]
            values = numbers.groupdict()
            assert float(values['ours']) > 0 and float(values['reference']) > 0, line
            assert_ratio_of_rounded(float(values['ours']), float(values['reference']), float(values['ratio']), 0.01)
            rows[model, mode, setting] = values
    return rows


@pytest.mark.e2e
def test_tool_inference_and_dense_modes_with_profiles():
    printed = run_tool_here(['tools/benchmark.py', '--modes', 'inference', 'dense', '--models', 'poolformerv2_s12',
                             '--profile', '3', '--no-memory', *TINY_TOOL])
    rows = printed_rows(printed)
    assert set(rows) == {('poolformerv2_s12', 'inference', 'cpu fp32 eager'),
                         ('poolformerv2_s12 32x32', 'dense', 'cpu fp32 eager')}
    profiles = re.findall(r'^--- profile: (.+)$', printed, re.M)
    assert sorted(profiles) == sorted(f'{model} {mode} cpu fp32 eager {side}' for model, mode in (
        ('poolformerv2_s12', 'inference'), ('poolformerv2_s12 32x32', 'dense')) for side in ('ours', 'timm'))
    assert printed.count('Self CPU') >= len(profiles)  # each profile is torch.profiler's operator table


@pytest.mark.e2e
def test_tool_startup_mode(monkeypatch):
    monkeypatch.setenv('MMMETAFORMER_FAST_PATH_MEASURE', '1')  # the suite turns the timing off (conftest.py)
    printed = run_tool_here(['tools/benchmark.py', '--modes', 'startup', '--models', 'caformer_s18', '--no-memory',
                             *TINY_TOOL])
    rows = printed_rows(printed)
    assert list(rows) == [('caformer_s18', 'startup', 'cpu fp32 eager')]
    assert re.search(r'^caformer_s18\s+startup\s+cpu fp32 eager\s+one step\s', printed, re.M)


@pytest.mark.e2e
def test_tool_compiled_rows_of_one_precision():
    from torch._dynamo.utils import counters
    torch.compiler.reset()  # graphs compiled by earlier tests of this process would count against the recompile limit
    graphs = counters['stats']['unique_graphs']
    printed = run_tool_here(['tools/benchmark.py', '--modes', 'inference', '--models', 'poolformer_s12', '--amp',
                             '--precisions', 'bf16', '--compile', '--compile-blocks', '--compile-backend', 'aot_eager',
                             '--no-memory', *TINY_TOOL])
    rows = printed_rows(printed)
    assert set(rows) == {('poolformer_s12', 'inference', f'cpu bf16 {how}')
                         for how in ('eager', 'compiled', 'blocks-compiled')}
    assert all(values['ours_mb'] == values['reference_mb'] == '-' for values in rows.values())
    # traced by dynamo: both sides' whole models (compiled), and our blocks (blocks-compiled)
    assert counters['stats']['unique_graphs'] - graphs >= 3


@pytest.mark.e2e
def test_tool_onnx_comparison_at_the_given_sizes():
    printed = run_tool_here(['tools/benchmark.py', '--onnx', '--size', '32', '--whole-size', '64', '64', '--iters',
                             '1', '--warmup', '0'])
    lines = {line[:30].strip(): line[30:].split() for line in printed.splitlines()[2:]}
    assert set(lines) == {'PoolFormer-S12 classifier', 'Semantic FPN PoolFormer-S12', 'RetinaNet PoolFormer-S12'}
    assert lines.pop('PoolFormer-S12 classifier')[0] == '32x32'
    for size, torch_ms, onnx_ms, speedup in lines.values():
        assert size == '64x64' and float(torch_ms) > 0 and float(onnx_ms) > 0
        assert_ratio_of_rounded(float(torch_ms), float(onnx_ms), float(speedup.rstrip('x')), 0.1)
