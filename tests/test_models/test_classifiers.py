"""The mmpretrain pieces: the MetaFormer classifier head's settings, and the classifier's loading of a state dict
that is no MetaFormer checkpoint."""
import pytest
import torch

import mmmetaformer as mmf

pytest.importorskip('mmpretrain')
from mmmetaformer.models.classifiers import MetaFormerClassifier, MetaFormerClsHead  # noqa: E402

# A PoolFormer of one block per stage, 8 channels wide.
TINY_ARCH = dict(mmf.PoolFormer.arch_settings['s12'], depths=(1, ) * 4, dims=(8, ) * 4)


def tiny_classifier() -> MetaFormerClassifier:
    return MetaFormerClassifier(
        backbone=dict(type='mmmetaformer.MetaFormer', arch=TINY_ARCH, out_indices=(3, ), norm_outputs=False),
        head=dict(type='mmmetaformer.MetaFormerClsHead', num_classes=3, in_channels=8))


def test_head_dropout_needs_the_mlp_head():
    with pytest.raises(ValueError, match='head_dropout is applied inside the MlpHead; it needs mlp_head=True'):
        MetaFormerClsHead(num_classes=3, in_channels=8, head_dropout=0.1)
    assert MetaFormerClsHead(num_classes=3, in_channels=8, mlp_head=True, head_dropout=0.1).fc.head_dropout.p == 0.1


def test_a_state_dict_of_another_model_is_reported_key_by_key_not_converted():
    model = tiny_classifier()
    foreign = {'fc.weight': torch.zeros(3, 8)}
    result = model.load_state_dict(foreign, strict=False)
    assert result.unexpected_keys == ['fc.weight']
    assert set(result.missing_keys) == set(model.state_dict())
    with pytest.raises(RuntimeError, match=r'(?s)Missing key\(s\) in state_dict: "backbone\.stem\.conv\.weight".*'
                                           r'Unexpected key\(s\) in state_dict: "fc\.weight"'):
        model.load_state_dict(foreign)
