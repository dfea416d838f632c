"""Smoke tests of the side-by-side benchmark (tiny sizes, one iteration): it runs, measures both sides, and compares
the same models. Timings themselves are not tested."""
import pytest
import torch

from mmmetaformer.apis.benchmark import MODES, Options, Setting, build_backbone_pair, build_whole_pair, synthetic_batch
from e2e import run_tool

TINY = dict(batch_size=1, size=64, whole_batch_size=1, whole_size=(64, 96), iters=1, warmup=0)


def check(row):
    assert row.ours_rate > 0 and row.reference_rate > 0
    assert row.ours_peak_mb > 0 and row.reference_peak_mb > 0


def test_backbone_training_row_measures_both_sides():
    rows = list(MODES['train'](Options(models=['poolformerv2_s12'], **TINY), Setting()))
    assert [(r.model, r.mode, r.reference) for r in rows] == [('poolformerv2_s12', 'train', 'timm')]
    check(rows[0])


def test_models_timm_lacks_are_named():
    with pytest.raises(ValueError, match='timm has no identityformer_s12'):
        build_backbone_pair('identityformer_s12')


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
                       '--batch-size', '1', '--size', '64', '--iters', '1', '--warmup', '0', '--no-memory'])
    row, = [line.split() for line in result.stdout.splitlines() if line.startswith('poolformer_s12')]
    # model, mode, setting (words), reference, ours img/s, reference img/s, ratio, two peak memories ('-': not measured)
    (model, mode), (reference, ours, theirs, ratio) = row[:2], row[-6:-2]
    assert (model, mode, reference) == ('poolformer_s12', 'train', 'timm')
    assert float(ours) > 0 and float(theirs) > 0
    assert float(ratio.rstrip('x')) == pytest.approx(float(ours) / float(theirs), abs=0.01)
