"""Our classifiers by name in mmpretrain (apis/model_hub.py): registered when mmpretrain loads, official weights
from a path or the metafile's URL, a clear error offline."""
import importlib
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch

from conftest import ROOT
from e2e import rel_err
from reference_impl import build_reference

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run


def test_importing_mmmetaformer_leaves_mmpretrain_alone_and_registers_it_when_it_loads():
    code = ("import sys, mmmetaformer\n"
            "assert 'mmpretrain' not in sys.modules\n"
            "import mmpretrain\n"
            "names = mmpretrain.list_models()\n"
            "assert {'caformer_s18_in1k', 'poolformer_s12_in1k', 'caformer_s18_384_in1k'} <= set(names), names\n"
            "assert 'resnet50_8xb32_in1k' in names  # mmpretrain's own models stay\n"
            "assert not any(name.startswith(('retinanet', 'mask_rcnn')) for name in names)\n")
    for order in ('', 'import mmpretrain\n'):  # mmpretrain imported after mmmetaformer, or before it
        script = code if not order else order + code.replace("assert 'mmpretrain' not in sys.modules\n", '')
        result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                                timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
        assert result.returncode == 0, result.stderr[-3000:]


def test_classifiers_are_registered_once():
    pytest.importorskip('mmpretrain')
    from mmpretrain.apis.model import ModelHub

    from mmmetaformer.apis.model_hub import register_classifiers
    register_classifiers()
    with mock.patch.object(ModelHub, 'register_model_index', side_effect=AssertionError('registered again')):
        register_classifiers()
    assert ModelHub.has('caformer_s18_in1k')


def test_import_hook_of_an_absent_module_steps_aside_without_calling_back(monkeypatch):
    """The one-shot hook leaves the import to the regular finders, which find nothing."""
    from mmmetaformer.apis.model_hub import _RunAfterImport
    called = []
    hook = _RunAfterImport('mmmetaformer_absent_module', lambda: called.append(True))
    monkeypatch.setattr(sys, 'meta_path', [hook, *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match="No module named 'mmmetaformer_absent_module'"):
        importlib.import_module('mmmetaformer_absent_module')
    assert hook not in sys.meta_path and not called


@pytest.mark.slow
def test_get_model_by_name_with_official_weights_from_a_path_or_the_url(tmp_ckpt):
    mmpretrain = pytest.importorskip('mmpretrain')
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    reference = build_reference('caformer_s18').eval()
    path = tmp_ckpt(reference.state_dict(), 'caformer_s18.pth')  # the official file, unconverted
    model = mmpretrain.get_model('caformer_s18_in1k', pretrained=path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model(x, mode='tensor'), reference(x)) < 1e-4
    # pretrained=True: the metafile's official URL, downloaded (here: served by a stand-in) and converted
    url = 'https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth'
    with mock.patch('mmengine.runner.checkpoint.load_from_http', return_value=reference.state_dict()) as download:
        inferencer = mmpretrain.ImageClassificationInferencer('caformer_s18_in1k', pretrained=True)
    assert download.call_args.args[0] == url
    with torch.no_grad():
        assert rel_err(inferencer.model(x, mode='tensor'), reference(x)) < 1e-4
    image = (torch.rand(64, 80, 3) * 255).to(torch.uint8).numpy()
    result = inferencer(image)[0]
    assert result['pred_class'] in IMAGENET_CATEGORIES  # the class names come with the official weights
    assert len(result['pred_scores']) == 1000 and 0 <= result['pred_label'] < 1000


def test_get_model_without_weights_downloads_nothing():
    mmpretrain = pytest.importorskip('mmpretrain')
    from mmengine.runner.checkpoint import CheckpointLoader
    with mock.patch.object(CheckpointLoader, 'load_checkpoint', side_effect=AssertionError('downloads')):
        model = mmpretrain.get_model('caformer_s18_384_in1k', pretrained=False)  # its config loads 224 weights
    assert type(model).__name__ == 'MetaFormerClassifier'
    assert model.backbone.init_cfg['checkpoint'].endswith('caformer_s18.pth')


def test_get_model_offline_says_how_to_use_a_local_copy():
    mmpretrain = pytest.importorskip('mmpretrain')
    url = 'https://huggingface.co/sail/dl/resolve/main/poolformerv2/poolformerv2_s12.pth'
    with pytest.raises(RuntimeError, match=rf'(?s)could not download the weights from {url}.*'
                                           r'local copy instead, e\.g\. /path/to/poolformerv2_s12\.pth'):
        mmpretrain.get_model('poolformerv2_s12_in1k', pretrained=True)
