import pytest
from mmengine.config import Config, ConfigDict

from mmmetaformer.errors import InvalidSettingError
from mmmetaformer.utils.configs import leaf_datasets, library_of


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_library_of_the_three_libraries(scope):
    assert library_of(Config(dict(default_scope=scope)), 'export') == scope


@pytest.mark.parametrize('cfg', [dict(), dict(default_scope='mmmetaformer'), dict(default_scope='mmocr')])
def test_library_of_refuses_other_configs(cfg):
    with pytest.raises(InvalidSettingError, match=r"ONNX export needs .*default_scope="):
        library_of(Config(cfg), 'ONNX export')


def test_leaf_datasets_through_wrappers_and_concatenations():
    a, b, c = (ConfigDict(type='CocoDataset', ann_file=name) for name in 'abc')
    wrapped = ConfigDict(type='ConcatDataset', datasets=[
        ConfigDict(type='RepeatDataset', times=2, dataset=a),
        ConfigDict(type='ConcatDataset', datasets=[b, ConfigDict(type='ClassBalancedDataset', dataset=c)])])
    assert [d.ann_file for d in leaf_datasets(wrapped)] == ['a', 'b', 'c']
    assert list(leaf_datasets(None)) == []
