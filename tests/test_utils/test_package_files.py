"""The configs, tools and model index that come with the package (utils/package_files.py): by name from a checkout,
and from a wheel installed outside it."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mmmetaformer
from mmmetaformer.utils import package_files
from conftest import ROOT


def test_config_file_names_a_config_or_its_close_matches():
    path = mmmetaformer.config_file('mmdet/retinanet_poolformer_s12_1x.py')
    assert path == os.path.realpath(os.path.join(ROOT, 'configs', 'mmdet', 'retinanet_poolformer_s12_1x.py'))
    with pytest.raises(FileNotFoundError, match='close matches: mmpretrain/caformer_s18_in1k.py'):
        mmmetaformer.config_file('caformer_s18_in1k')
    with pytest.raises(FileNotFoundError, match='names are relative to configs/'):
        mmmetaformer.config_file('../setup.py')


@pytest.mark.slow
@pytest.mark.e2e
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
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', script], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # The packaged benchmark tool finds its configs in the wheel: whole models, and an exported graph in onnxruntime.
    tool = site / 'mmmetaformer' / '.mim' / 'tools' / 'benchmark.py'
    whole = subprocess.run([sys.executable, str(tool), '--modes', 'whole', '--whole-models', 'semantic_fpn',
                            '--whole-size', '64', '64', '--whole-batch-size', '1', '--iters', '1', '--warmup', '0',
                            '--device', 'cpu', '--no-memory'], cwd=elsewhere, capture_output=True, text=True,
                           timeout=600, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert any(line.startswith('semantic_fpn_poolformer_s12 64x64') for line in whole.stdout.splitlines())
    onnx = ("from mmmetaformer.export.onnx_benchmark import compare_onnx_runtime\n"
            "seconds = compare_onnx_runtime('mmpretrain/poolformer_s12_in1k.py', (64, 64), threads=1, iters=1, "
            "warmup=0)\n"
            "assert all(value > 0 for value in seconds.values()), seconds\n")
    result = subprocess.run([sys.executable, '-c', onnx], cwd=elsewhere, capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_package_root_is_the_wheels_mim_copy_else_the_checkout(tmp_path, monkeypatch):
    """A package folder with a ``.mim`` copy (a wheel) serves it; one without, beside no configs (a package copied
    elsewhere without them), is an error that says how to reinstall."""
    package = tmp_path / 'site' / 'mmmetaformer'
    package.mkdir(parents=True)
    monkeypatch.setattr(package_files, 'PACKAGE_DIR', package)
    with pytest.raises(FileNotFoundError, match=rf'mmmetaformer at {package} carries no configs: neither '
                                                rf'{package}/\.mim \(a wheel\) nor {package.parent}/configs \(a '
                                                r'checkout\) exists\. Reinstall it from a wheel'):
        package_files.package_root()
    (package / '.mim' / 'configs').mkdir(parents=True)
    (package / '.mim' / 'model-index.yml').write_text('Import: []\n')
    assert package_files.package_root() == package / '.mim'
    assert package_files.model_index_file() == package / '.mim' / 'model-index.yml'


def test_a_checkouts_model_index_is_its_own():
    assert package_files.model_index_file() == Path(ROOT, 'model-index.yml').resolve()
