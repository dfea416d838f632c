"""The shapes exported graphs declare: for every exported kind (classifier, segmentor, RetinaNet, Mask R-CNN,
Faster R-CNN), fixed-size and dynamic, the file passes ``onnx.checker``'s full check and onnxruntime returns each
output in the declared shape (numbers equal, each named axis one size throughout a run), without its
``VerifyOutputSizes`` warning; the shape check of ``--verify`` and its provider option."""
import os
import subprocess
import sys

import onnx
import pytest

from conftest import ROOT
from e2e import EXPORT_KINDS, build_export_kind

pytest.importorskip('onnxruntime')


def expected_shapes(kind: str, shape: tuple, dynamic: bool) -> dict:
    """The declared shapes of the input and outputs of an export of ``kind`` at ``shape`` (H, W)."""
    batch, height, width = ('batch', 'height', 'width') if dynamic else (1, *shape)
    image = dict(input=[batch, 3, height, width])
    if kind == 'classifier':
        return dict(image, scores=[batch, 1000])
    if kind == 'segmentor':
        return dict(image, seg_logits=[batch, 150, height, width])
    detections = dict(image, dets=[batch, 'detections', 5], labels=[batch, 'detections'])
    if kind == 'mask_rcnn':
        detections['masks'] = [batch, 'detections', height, width]
    return detections


@pytest.mark.e2e
@pytest.mark.parametrize('dynamic', [False, True], ids=['fixed', 'dynamic'])
@pytest.mark.parametrize('kind', list(EXPORT_KINDS))
def test_declared_output_shapes_are_what_onnxruntime_returns(kind, dynamic, tmp_path, capfd):
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import example_input, export_onnx
    from mmmetaformer.export.verify import declared_shapes, inference_session, run_session, shape_problems
    cfg, model = build_export_kind(kind)
    _, _, shape, second = EXPORT_KINDS[kind]
    path = str(tmp_path / f'{kind}.onnx')
    export_onnx(build_export_model(model, cfg), path, shape, dynamic)
    onnx.checker.check_model(path, full_check=True)
    session = inference_session(path)
    declared = declared_shapes(path)
    assert declared == expected_shapes(kind, shape, dynamic)
    inputs = [example_input(shape)] + ([example_input(second, 2, seed=1)] if dynamic else [])
    for x in inputs:
        outputs = run_session(session, x)
        returned = dict(input=tuple(x.shape), **{name: value.shape for name, value in outputs.items()})
        assert shape_problems(declared, returned) == []
        if 'labels' in outputs:
            assert outputs['labels'].shape[1] > 0, 'no detections: the count axis is not exercised'
    assert 'VerifyOutputSizes' not in capfd.readouterr().err


def test_shape_problems_finds_every_kind_of_mismatch():
    from mmmetaformer.export.verify import shape_problems
    declared = dict(input=['batch', 3, 'height', 'width'], dets=['batch', 'detections', 5],
                    labels=['batch', 'detections'], masks=['batch', 'detections', 'height', 'width'])
    good = dict(input=(2, 3, 64, 48), dets=(2, 7, 5), labels=(2, 7), masks=(2, 7, 64, 48))
    assert shape_problems(declared, good) == []
    assert shape_problems(declared, dict(good, masks=(2, 1, 64, 48))) == [
        'masks: declared shape (batch, detections, height, width), onnxruntime returned (2, 1, 64, 48) '
        '(where batch=2, height=64, width=48, detections=7)']
    assert shape_problems(declared, dict(good, dets=(2, 7, 6)))[0].startswith('dets: declared shape')
    assert shape_problems(declared, dict(good, labels=(2, 7, 1)))[0].startswith('labels: declared shape')
    assert shape_problems(dict(declared, labels=['batch', None]), good) == [
        'labels: declared shape (batch, ?), onnxruntime returned (2, 7) (where batch=2, height=64, width=48, '
        'detections=7)']


def test_verify_fails_on_an_output_that_is_not_of_its_declared_shape(tmp_path):
    """A declared shape that onnxruntime only warns about (VerifyOutputSizes) fails ``--verify``."""
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import example_input, export_onnx
    from mmmetaformer.export.verify import verify_onnx
    cfg, model = build_export_kind('classifier')
    path = str(tmp_path / 'classifier.onnx')
    export_onnx(build_export_model(model, cfg), path, (64, 64))
    graph = onnx.load(path)
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(graph, path)
    report = verify_onnx(model, cfg, path, example_input((64, 64)))
    assert not report.ok and report.problems == [
        'scores: declared shape (1, 1), onnxruntime returned (1, 1000)'], str(report)


def test_unknown_provider_is_refused_with_the_known_ones():
    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.export.verify import check_provider, inference_session
    for call in (lambda: check_provider('tpu'), lambda: inference_session('unused.onnx', 'tpu')):
        with pytest.raises(InvalidSettingError, match=r"unknown onnxruntime provider 'tpu': one of \['cpu', 'cuda'\]"):
            call()


@pytest.mark.e2e
def test_cuda_provider_is_refused_where_onnxruntime_lacks_it(tmp_path):
    import onnxruntime as ort

    from mmmetaformer.export.verify import check_provider
    assert check_provider('cpu') == 'CPUExecutionProvider'
    if 'CUDAExecutionProvider' in ort.get_available_providers():
        pytest.skip('this onnxruntime has the CUDA provider (tests/gpu/test_onnx_cuda.py runs it)')
    with pytest.raises(RuntimeError, match='has no CUDAExecutionProvider'):
        check_provider('cuda')
    command = [sys.executable, 'tools/export_onnx.py', 'configs/mmpretrain/poolformer_s12_in1k.py', 'unused.pth',
               '--out', str(tmp_path / 'x.onnx'), '--provider', 'cuda']
    env = dict(os.environ, PYTHONPATH=ROOT)
    for extra, message in [([], 'add --verify'), (['--verify'], 'has no CUDAExecutionProvider')]:
        result = subprocess.run(command + extra, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 1 and message in result.stderr, result.stderr
