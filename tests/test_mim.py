"""OpenMMLab's ``mim`` (onedl-mim) with the package: ``mim search mmmetaformer`` lists the model index and ``mim train
onedl-mmdetection CONFIG`` trains a config through mmdet's packaged tool. onedl-mim is not in the pinned stack: the
tests skip where it is not installed."""
import importlib.metadata as metadata
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import ROOT
from e2e import DET_TINY, RETINA_HEAD, logged_metric, tool_env, write_config

mim = pytest.importorskip('mim', reason='onedl-mim is not installed (it is not in the pinned stack)')
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_mim(args, cwd) -> subprocess.CompletedProcess:
    # mim may sit outside the environment's site-packages (pip install --target): the child finds it as we did
    paths = [ROOT, osp.dirname(osp.dirname(mim.__file__))]
    env = dict(tool_env(), PYTHONPATH=os.pathsep.join(paths))
    result = subprocess.run([sys.executable, '-m', 'mim', *args], cwd=cwd, capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, f'mim {" ".join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    return result


def test_mim_search_lists_the_model_index(tmp_path):
    try:
        metadata.distribution('mmmetaformer')
    except metadata.PackageNotFoundError:
        pytest.skip('mmmetaformer is not installed as a distribution (tools/install.sh installs it editable)')
    result = run_mim(['search', 'mmmetaformer'], str(tmp_path))
    for name in ('retinanet_poolformer_s12_1x', 'upernet_caformer_s18_160k_ade20k', 'caformer_s18_in1k'):
        assert name in result.stdout, name


def test_mim_train_runs_a_config_through_mmdets_tool(tmp_path):
    from mmmetaformer.testing import make_coco_shapes
    shapes = make_coco_shapes(str(tmp_path / 'shapes'), splits=(('train', 4), ('val', 2)))
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    result = run_mim(['train', 'onedl-mmdetection', config, '--work-dir', str(tmp_path / 'work')], str(tmp_path))
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
