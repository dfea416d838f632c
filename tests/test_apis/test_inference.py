"""tools/inference.py and mmmetaformer.apis.inference: a detector, a segmentor and a classifier (random weights saved as
mm checkpoints) on generated images, through the libraries' inferencers; pictures and JSON predictions; clear
errors for bad input."""
import json
import os.path as osp

import cv2
import pytest
import torch
from PIL import Image

from conftest import ROOT
from e2e import DET_TINY, run_tool, save_random_checkpoint, tiny_seg_config, write_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

SHAPES = ('square', 'circle', 'triangle')
# score_thr 0 in the head's test_cfg: an untrained RetinaNet scores everything about 0.01 and would keep no box
RETINA_HEAD = ', bbox_head=dict(num_classes=3), test_cfg=dict(score_thr=0.0, max_per_img=20)'


@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 1), ('val', 3)),
                            size=(96, 112))


@pytest.fixture(scope='module')
def classifier(module_tmp_factory):
    """(config, checkpoint) of a PoolFormer-S12 classifier with random weights."""
    config = osp.join(ROOT, 'configs', 'mmpretrain', 'poolformer_s12_in1k.py')
    folder = module_tmp_factory.mktemp('classifier')
    return config, save_random_checkpoint(config, str(folder / 'poolformer_s12.pth'))


def test_detector_pictures_and_predictions_through_the_tool(shapes, tmp_path):
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=shapes, model_extra=RETINA_HEAD, mask=False, epochs=1))
    checkpoint = save_random_checkpoint(config, str(tmp_path / 'retina.pth'), SHAPES)
    val = osp.join(shapes, 'val')
    out = tmp_path / 'out'
    # two files and a folder holding the third image (and a file that is not an image, skipped)
    folder = tmp_path / 'more'
    folder.mkdir()
    Image.open(osp.join(val, 'val_00002.jpg')).save(folder / 'third.png')
    (folder / 'notes.txt').write_text('not an image')
    video = str(tmp_path / 'clip.mp4')  # three frames of the same size as the images (112 x 96), 5 per second
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5.0, (112, 96))
    for index in range(3):
        writer.write(cv2.imread(osp.join(val, f'val_0000{index}.jpg')))
    writer.release()
    result = run_tool(['tools/inference.py', config, checkpoint, osp.join(val, 'val_00000.jpg'),
                       osp.join(val, 'val_00001.jpg'), str(folder), video, '--out-dir', str(out), '--score-thr',
                       '0.01'])
    assert '3 pictures and 1 videos' in result.stdout
    assert sorted(p.name for p in (out / 'vis').iterdir()) == ['clip.mp4', 'third.png', 'val_00000.jpg',
                                                               'val_00001.jpg']
    assert sorted(p.name for p in (out / 'preds').iterdir()) == ['clip.json', 'third.json', 'val_00000.json',
                                                                 'val_00001.json']
    for picture in (out / 'vis').glob('*.*g'):
        assert Image.open(picture).size == (112, 96)  # drawn on the original image
    drawn = cv2.VideoCapture(str(out / 'vis' / 'clip.mp4'))
    assert (drawn.get(cv2.CAP_PROP_FPS), drawn.get(cv2.CAP_PROP_FRAME_WIDTH), drawn.get(cv2.CAP_PROP_FRAME_HEIGHT),
            drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == (5.0, 112, 96, 3)
    frames = json.loads((out / 'preds' / 'clip.json').read_text())
    assert len(frames) == 3
    for prediction in [json.loads(found.read_text()) for found in (out / 'preds').glob('val_*.json')] + frames:
        assert len(prediction['labels']) == len(prediction['scores']) == len(prediction['bboxes']) == 20
        assert all(len(box) == 4 for box in prediction['bboxes'])
        assert all(label in (0, 1, 2) for label in prediction['labels'])
        assert all(0 <= x <= 112 and 0 <= y <= 96 for x0, y0, x1, y1 in prediction['bboxes']
                   for x, y in ((x0, y0), (x1, y1)))


def test_segmentor_predicts_a_class_per_pixel(tmp_path):

    from mmmetaformer.apis.inference import run_inference
    from mmmetaformer.testing import make_ade20k_like
    ade = make_ade20k_like(str(tmp_path / 'ade'), splits=(('validation', 2), ))
    config = tiny_seg_config(tmp_path, ade, 'fpn_poolformer_s12_40k_ade20k')
    checkpoint = save_random_checkpoint(config, str(tmp_path / 'fpn.pth'))
    written = run_inference(config, checkpoint, [osp.join(ade, 'images', 'validation')], str(tmp_path / 'out'),
                            device='cpu')
    assert len(written) == 2
    for picture, predictions in written:
        assert Image.open(picture).size == (128, 96)
        sem_seg = json.load(open(predictions))['sem_seg']
        assert len(sem_seg) == 96 and all(len(row) == 128 for row in sem_seg)
        assert all(0 <= label < 150 for row in sem_seg for label in row)


def test_classifier_scores_every_class(classifier, tmp_path):
    from mmmetaformer.apis.inference import run_inference
    from mmmetaformer.testing import make_imagenet_folders
    images = make_imagenet_folders(str(tmp_path / 'imagenet'), splits=(('val', 1), ))
    config, checkpoint = classifier
    written = run_inference(config, checkpoint, [images], str(tmp_path / 'out'), device='cpu')
    # class folders: the outputs keep the path inside the folder
    assert [osp.relpath(p, tmp_path / 'out') for p, _ in written] == [
        'vis/val/n01440764/n01440764_0.JPEG', 'vis/val/n01443537/n01443537_0.JPEG',
        'vis/val/n01484850/n01484850_0.JPEG']
    for picture, predictions in written:
        assert min(Image.open(picture).size) == 224  # small images are enlarged so that the label stays readable
        prediction = json.load(open(predictions))
        scores = prediction['pred_scores']
        assert len(scores) == 1000 and abs(sum(scores) - 1) < 1e-4
        assert scores[prediction['pred_label']] == pytest.approx(prediction['pred_score']) == max(scores)


def test_bad_inputs_fail_clearly(classifier, tmp_path):
    from mmmetaformer.apis.inference import collect_inputs, run_inference
    config, checkpoint = classifier
    image = tmp_path / 'a.jpg'
    Image.new('RGB', (32, 32)).save(image)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'clip.mp4').write_bytes(b'\0')
    (tmp_path / 'table.csv').write_text('1,2')
    (tmp_path / 'other').mkdir()
    Image.new('RGB', (32, 32)).save(tmp_path / 'other' / 'a.png')
    cases = [
        ([], ValueError, 'no inputs given'),
        ([str(tmp_path / 'nowhere.jpg')], FileNotFoundError, 'nowhere.jpg does not exist'),
        ([str(tmp_path / 'empty')], ValueError, 'holds no images'),
        ([str(tmp_path / 'table.csv')], ValueError, "unsupported file type '.csv'"),
        ([str(image), str(tmp_path / 'other' / 'a.png')], ValueError, 'would write the same outputs'),
    ]
    for inputs, error, message in cases:
        with pytest.raises(error, match=message):
            collect_inputs(inputs)
    out = str(tmp_path / 'out')
    with pytest.raises(FileNotFoundError, match='config .*missing.py does not exist'):
        run_inference(str(tmp_path / 'missing.py'), checkpoint, [str(image)], out)
    with pytest.raises(FileNotFoundError, match='checkpoint .*missing.pth does not exist'):
        run_inference(config, str(tmp_path / 'missing.pth'), [str(image)], out)
    with pytest.raises(RuntimeError, match=f'cannot read checkpoint {tmp_path}: it is a folder'):
        run_inference(config, str(tmp_path), [str(image)], out)
    with pytest.raises(ValueError, match='clip.mp4: OpenCV read no frame of this video'):
        run_inference(config, checkpoint, [str(tmp_path / 'clip.mp4')], out, device='cpu')
    with pytest.raises(ValueError, match='score threshold applies to detectors only'):
        run_inference(config, checkpoint, [str(image)], out, score_thr=0.5)
    other_size = osp.join(ROOT, 'configs', 'mmpretrain', 'poolformer_s24_in1k.py')
    with pytest.raises(ValueError, match='does not fit the model of this config'):
        run_inference(other_size, checkpoint, [str(image)], out, device='cpu')
    assert not osp.exists(out)


def test_the_tool_reports_errors_without_a_traceback(classifier, tmp_path):
    import subprocess
    import sys
    config, checkpoint = classifier
    result = subprocess.run([sys.executable, 'tools/inference.py', config, checkpoint, str(tmp_path / 'none.jpg'),
                             '--out-dir', str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert 'error: input' in result.stderr and 'none.jpg does not exist' in result.stderr
    assert 'Traceback' not in result.stderr


def test_official_classifier_files_load_directly(tmp_path):
    """An official PoolFormer file (sail-sg layout) is converted on loading: the classifier gives its logits."""
    from mmmetaformer.apis.inference import build_inferencer
    from reference_impl import build_reference
    reference = build_reference('poolformer_s12').eval()
    official = str(tmp_path / 'poolformer_s12.pth.tar')
    torch.save(reference.state_dict(), official)
    config = osp.join(ROOT, 'configs', 'mmpretrain', 'poolformer_s12_in1k.py')
    model = build_inferencer(config, official, 'cpu').model
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), reference(inputs), rtol=1e-4, atol=1e-4)
