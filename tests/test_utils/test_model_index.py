"""The model zoo: model-index.yml and the metafiles against the configs (names, one entry each, parameter counts,
README tables), our classifiers by name in mmpretrain, and the configs packaged in a wheel."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import pytest
import torch

import mmmetaformer
from mmmetaformer.utils import model_index
from mmmetaformer.utils.complexity import build_model_from_config
from conftest import ROOT
from reference_impl import build_reference

MODELS = model_index.models(Path(ROOT))


def subprocess_env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', **extra)


def test_model_index_imports_exist_and_every_config_has_one_entry():
    imported = model_index.metafiles(Path(ROOT))
    assert {'configs/mmdet/metafile.yml', 'configs/mmpretrain/metafile.yml'} <= set(imported)
    assert model_index.check_model_index(Path(ROOT)) == []
    names = [model['Name'] for model in MODELS]
    assert len(names) == len(set(names))
    assert {'caformer_s18_in1k', 'caformer_b36_384_in1k', 'retinanet_poolformer_s12_1x'} <= set(names)


def test_model_index_check_finds_a_config_without_entry(tmp_path):
    shutil.copytree(Path(ROOT, 'configs'), tmp_path / 'configs')
    shutil.copy(Path(ROOT, 'model-index.yml'), tmp_path)
    (tmp_path / 'configs/mmdet/retinanet_new_1x.py').write_text("_base_ = './retinanet_poolformer_s12_1x.py'\n")
    assert model_index.check_model_index(tmp_path) == [
        'configs/mmdet/metafile.yml: config configs/mmdet/retinanet_new_1x.py has 0 entries, not 1']


def test_metafiles_load_through_modelindex():
    from modelindex.load_model_index import load
    index = load(os.path.join(ROOT, 'model-index.yml'))
    index.build_models_with_collections()
    loaded = {model.name: model for model in index.models}
    assert set(loaded) == {model['Name'] for model in MODELS}
    caformer = loaded['caformer_s18_in1k']
    assert caformer.full_model.paper['URL'] == 'https://arxiv.org/abs/2210.13452'
    assert caformer.results.data[0].metrics['Top 1 Accuracy'] == 83.6
    assert caformer.weights == 'https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth'


def test_config_file_names_a_config_or_its_close_matches():
    path = mmmetaformer.config_file('mmdet/retinanet_poolformer_s12_1x.py')
    assert path == os.path.realpath(os.path.join(ROOT, 'configs', 'mmdet', 'retinanet_poolformer_s12_1x.py'))
    with pytest.raises(FileNotFoundError, match='close matches: mmpretrain/caformer_s18_in1k.py'):
        mmmetaformer.config_file('caformer_s18_in1k')
    with pytest.raises(FileNotFoundError, match='names are relative to configs/'):
        mmmetaformer.config_file('../setup.py')


def test_readme_tables_are_the_metafiles():
    assert model_index.update_readmes(Path(ROOT), check=True) == []


@pytest.mark.parametrize('task', sorted({Path(model['Config']).parts[1] for model in MODELS}))
def test_parameter_counts_are_those_of_the_built_models(task):
    pytest.importorskip(task)
    entries = [model for model in MODELS if Path(model['Config']).parts[1] == task]
    wrong = {}
    for model in entries:
        model_on_meta = build_model_from_config(os.path.join(ROOT, model['Config']), 'meta')
        count = sum(p.numel() for p in model_on_meta.parameters())
        if count != model['Metadata']['Parameters']:
            wrong[model['Name']] = (model['Metadata']['Parameters'], count)
    assert wrong == {}, 'metafile Parameters differ from the built models (metafile, built)'


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


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
        result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=subprocess_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]


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


def test_wheel_carries_the_configs_and_serves_them_outside_the_checkout(tmp_path):
    source, dist, site, elsewhere = (tmp_path / name for name in ('source', 'dist', 'site', 'elsewhere'))
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', '*.egg-info', '__pycache__', 'work_dirs', 'data', '.pytest_cache'))
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(source), '--no-deps', '--no-build-isolation',
                            '-q', '-w', str(dist)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = dist.glob('mmmetaformer-*.whl')
    files = zipfile.ZipFile(wheel).namelist()
    for packaged in ('configs/mmdet/retinanet_poolformer_s12_1x.py', 'configs/mmdet/_base_/coco_detection.py',
                     'configs/mmpretrain/metafile.yml', 'tools/train.py', 'tools/dist_train.sh', 'model-index.yml'):
        assert f'mmmetaformer/.mim/{packaged}' in files
    assert not [name for name in files if '__pycache__' in name or name.endswith('.pyc')]
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere.mkdir()
    # A user's own project: a config inheriting one of ours by name, and one derived and saved in Python.
    (elsewhere / 'my_retinanet.py').write_text(
        "_base_ = __import__('mmmetaformer').config_file('mmdet/retinanet_poolformer_s12_1x.py')\n"
        "model = dict(bbox_head=dict(num_classes=3))\n")
    script = f"""
import mmmetaformer
from mmengine.config import Config
assert mmmetaformer.__file__.startswith({str(site)!r}), mmmetaformer.__file__
path = mmmetaformer.config_file('mmdet/retinanet_poolformer_s12_1x.py')
assert path.startswith({str(site)!r}), path
mine = Config.fromfile('my_retinanet.py')
assert mine.model.backbone.type == 'mmmetaformer.PoolFormer' and mine.model.bbox_head.num_classes == 3
cfg = Config.fromfile(path)
cfg.merge_from_dict({{'model.bbox_head.num_classes': 3}})
cfg.dump('derived.py')
assert Config.fromfile('derived.py').to_dict() == mine.to_dict()
try:
    mmmetaformer.config_file('mmdet/retinanet_poolformer_s12.py')
except FileNotFoundError as error:
    assert 'mmdet/retinanet_poolformer_s12_1x.py' in str(error), error
else:
    raise AssertionError('an unknown config name was accepted')
import mmpretrain
assert mmpretrain.get_model('poolformer_s12_in1k')._config.filename.startswith({str(site)!r})
"""
    result = subprocess.run([sys.executable, '-c', script], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
