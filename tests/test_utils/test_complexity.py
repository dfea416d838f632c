"""Parameter and MAC counts (utils/complexity.py) and tools/get_flops.py."""
import os.path as osp

import pytest
from torch import nn

from conftest import ROOT
from e2e import run_tool, run_tool_here

UPERNET_CAFORMER_S18 = osp.join(ROOT, 'configs', 'mmseg', 'upernet_caformer_s18_160k_ade20k.py')


@pytest.mark.e2e
def test_meta_device_count_equals_a_real_forward():
    """The MACs counted on the meta device (shapes only) are those of a real forward, attention included."""
    from mmmetaformer.utils.complexity import build_model_from_config, count_macs, count_params_and_macs
    shape = (64, 160)
    real = build_model_from_config(UPERNET_CAFORMER_S18, 'cpu')
    macs = count_macs(real, shape, 'mmseg')
    assert count_params_and_macs(UPERNET_CAFORMER_S18, shape) == (sum(p.numel() for p in real.parameters()), macs)
    # on the meta device itself, not through the fallback to real tensors
    assert count_macs(build_model_from_config(UPERNET_CAFORMER_S18, 'meta'), shape, 'mmseg') == macs


@pytest.mark.e2e
def test_get_flops_tool_on_a_config():
    result = run_tool(['tools/get_flops.py', UPERNET_CAFORMER_S18])
    assert 'input shape: 512x2048' in result.stdout
    assert 'params: 53.73 M' in result.stdout
    macs = float(result.stdout.split('MACs: ')[1].split(' G')[0])
    assert abs(macs - 1024) / 1024 < 0.03


def test_get_flops_tool_classifier_table_and_shapes(capsys):
    """The table of published classifiers (at 384, where only the fine-tuned ones have published MACs), a config at
    a given height and width, and the shapes it refuses."""
    printed = run_tool_here(['tools/get_flops.py', '--models', 'convformer_s18', '--shape', '384'])
    header, = [line.split() for line in printed.splitlines() if line.startswith('model ')]
    assert header == ['model', 'params', '(M)', 'trainable', 'published', 'MACs', '(G)', 'published']
    row, = [line.split()[1:] for line in printed.splitlines() if line.startswith('convformer_s18 ')]
    assert row[:3] == ['26.77', '26.77', '26.77'] and row[4] == '11.6'  # published at 384
    assert abs(float(row[3]) - 11.6) / 11.6 < 0.03
    config = osp.join(ROOT, 'configs', 'mmpretrain', 'poolformer_s12_in1k.py')
    printed = run_tool_here(['tools/get_flops.py', config, '--shape', '64', '96'])
    assert printed.splitlines()[:3] == [config, 'input shape: 64x96 (height x width)', 'params: 11.92 M (11915176)']
    capsys.readouterr()
    for options, message in ((['--shape', '1', '2', '3'], '--shape takes one size or height and width'),
                             (['--shape', '224', '256'], 'the classifier table takes a square input')):
        run_tool_here(['tools/get_flops.py', *options], status=2)
        assert message in capsys.readouterr().err


class ShapeRecorder(nn.Module):
    """A one-convolution model that keeps what ``forward(mode='tensor')`` was given beside the image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.data_samples = None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.data_samples = data_samples
        return self.conv(inputs)


def test_a_detector_is_given_the_image_size_and_a_classifier_nothing():
    """Detectors read the image size from the data samples' metainfo; the MACs are those of the convolution."""
    from mmmetaformer.utils.complexity import count_macs
    model = ShapeRecorder()
    assert count_macs(model, (8, 12), 'mmdet') == 3 * 4 * 8 * 12
    sample, = model.data_samples
    assert (sample.img_shape, sample.batch_input_shape, sample.scale_factor) == ((8, 12), (8, 12), (1.0, 1.0))
    assert count_macs(model, (8, 12), 'mmpretrain') == 3 * 4 * 8 * 12 and model.data_samples is None


def test_a_config_of_another_library_and_a_wrong_shape_are_refused():
    from mmengine.config import Config

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.utils.complexity import input_shape
    cfg = Config(dict(default_scope='mmaction', model=dict(type='Recognizer3D')))
    with pytest.raises(InvalidSettingError,
                       match=r"default_scope is 'mmaction'; expected one of \['mmdet', 'mmpretrain', 'mmseg'\]"):
        input_shape(cfg)
    assert input_shape(cfg, 32) == (32, 32) and input_shape(cfg, [32, 48]) == (32, 48)
    for shape in ((0, 32), (1, 2, 3)):
        with pytest.raises(InvalidSettingError, match=r'one size \(a square\) or \(height, width\), got \('):
            input_shape(cfg, shape)
