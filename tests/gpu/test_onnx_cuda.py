"""``--verify --provider cuda``: exported graphs checked on onnxruntime's CUDA execution provider against the PyTorch
model (outputs within the tolerances, each output in its declared shape); skipped where onnxruntime has no CUDA
provider (the onnxruntime-gpu package)."""
import os
import subprocess
import sys

import pytest
import torch

from mmmetaformer.export import build_export_model
from mmmetaformer.export.exporter import build_model, example_input, export_onnx
from mmmetaformer.export.verify import verify_onnx
from conftest import ROOT
from e2e import build_export_kind, load_cfg

# A GPU machine installed from a wheelhouse (tools/install.sh --wheelhouse) has no onnxruntime: the rest of the GPU
# suite runs, this module is reported as skipped.
ort = pytest.importorskip('onnxruntime', reason='needs onnxruntime-gpu (the wheelhouse of the GPU recipe has none)')
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    'CUDAExecutionProvider' not in ort.get_available_providers(),
    reason=f'onnxruntime {ort.__version__} has no CUDAExecutionProvider (needs onnxruntime-gpu)')]


def test_classifier_verifies_on_cuda_from_the_command_line(tmp_path):
    config = os.path.join(ROOT, 'configs', 'mmpretrain', 'caformer_s18_in1k.py')
    checkpoint = str(tmp_path / 'caformer.pth')
    torch.save(dict(state_dict=build_model(load_cfg(config)).state_dict()), checkpoint)
    command = [sys.executable, 'tools/export_onnx.py', config, checkpoint, '--out', str(tmp_path / 'caformer.onnx'),
               '--shape', '64', '64', '--dynamic', '--verify', '--provider', 'cuda']
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.count('onnxruntime (CUDAExecutionProvider) vs PyTorch') == 2, output
    assert result.stdout.count('agrees within tolerance') == 2 and 'VerifyOutputSizes' not in output, output


def test_mask_rcnn_verifies_on_cuda(tmp_path, capfd):
    """NonMaxSuppression, RoiAlign and the mask paste on CUDA, at the exported size and a batch of 2 at another."""
    cfg, model = build_export_kind('mask_rcnn')
    with torch.no_grad():  # mask logits saturated like a trained model's (random ones hover around 0.5)
        model.roi_head.mask_head.conv_logits.weight.mul_(1000.0)
    path = str(tmp_path / 'mask_rcnn.onnx')
    export_onnx(build_export_model(model, cfg), path, (128, 128), dynamic=True)
    for x in (example_input((128, 128)), example_input((160, 96), 2, seed=1)):
        report = verify_onnx(model, cfg, path, x, provider='cuda')
        assert report.ok and not report.notes, f'{tuple(x.shape)}:\n{report}'
    assert 'VerifyOutputSizes' not in capfd.readouterr().err


def test_a_cuda_provider_that_cannot_start_is_an_error_not_a_cpu_run(tmp_path):
    """With the GPU hidden (``CUDA_VISIBLE_DEVICES=''``), onnxruntime lists its CUDA provider but falls back to the
    CPU when the session starts: verifying on CUDA stops with an error instead of checking the CPU."""
    config = os.path.join(ROOT, 'configs', 'mmpretrain', 'caformer_s18_in1k.py')
    checkpoint = str(tmp_path / 'caformer.pth')
    torch.save(dict(state_dict=build_model(load_cfg(config)).state_dict()), checkpoint)
    command = [sys.executable, 'tools/export_onnx.py', config, checkpoint, '--out', str(tmp_path / 'caformer.onnx'),
               '--shape', '64', '64', '--verify', '--provider', 'cuda']
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES=''))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and 'onnxruntime could not start CUDAExecutionProvider' in output, output
    assert 'agrees within tolerance' not in output, output
