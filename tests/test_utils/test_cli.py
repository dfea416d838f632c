"""The helpers of the command-line tools (utils/cli.py)."""
import os.path as osp

import pytest

from conftest import ROOT


def test_tta_without_tta_pipeline_is_a_clear_error():
    from mmengine.config import Config

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.utils.cli import enable_tta
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmdet', 'retinanet_poolformer_s12_1x.py'))
    with pytest.raises(InvalidSettingError, match='--tta needs tta_pipeline and tta_model'):
        enable_tta(cfg)
