"""Parameter and MAC counts (utils/complexity.py) and tools/get_flops.py."""
import os.path as osp

import pytest

from conftest import ROOT
from e2e import run_tool

UPERNET_CAFORMER_S18 = osp.join(ROOT, 'configs', 'mmseg', 'upernet_caformer_s18_160k_ade20k.py')


@pytest.mark.e2e
def test_meta_device_count_equals_a_real_forward():
    """The MACs counted on the meta device (shapes only) are those of a real forward, attention included."""
    from mmmetaformer.utils.complexity import build_model_from_config, count_macs, count_params_and_macs
    shape = (64, 160)
    real = build_model_from_config(UPERNET_CAFORMER_S18, 'cpu')
    assert count_params_and_macs(UPERNET_CAFORMER_S18, shape) == \
        (sum(p.numel() for p in real.parameters()), count_macs(real, shape, 'mmseg'))


@pytest.mark.e2e
def test_get_flops_tool_on_a_config():
    result = run_tool(['tools/get_flops.py', UPERNET_CAFORMER_S18])
    assert 'input shape: 512x2048' in result.stdout
    assert 'params: 53.73 M' in result.stdout
    macs = float(result.stdout.split('MACs: ')[1].split(' G')[0])
    assert abs(macs - 1024) / 1024 < 0.03
