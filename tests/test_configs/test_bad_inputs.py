"""The tools given bad input, as a careless or unlucky user would: each ends with one ``error:`` line that says what is
wrong and what to do, before any iteration, and prints no key dump or traceback first. The tools run in this
process (``runpy``), as ``python tools/<tool>.py ...`` would."""
import itertools
import json
import os
import os.path as osp
import runpy
import shutil
import sys

import pytest
import torch

from conftest import ROOT
from e2e import DET_TINY, save_random_checkpoint, write_config

pytest.importorskip('mmdet')
pytest.importorskip('mmpretrain')

NAMES = (f'bad{index}' for index in itertools.count())


def fresh_names() -> tuple:
    """``--cfg-options`` naming a run's logger and visualizer anew: mmengine keeps one instance per name in the
    process, with the work dir of the run that made it."""
    name = next(NAMES)
    return '--cfg-options', f'experiment_name={name}', f'visualizer.name={name}'


def tool_error(monkeypatch, capfd, tool: str, *args: str, one_line: bool = True) -> str:
    """Run ``tools/<tool>`` with ``args`` in this process; return its ``error:`` message after checking that the
    tool exited with it and printed no traceback or list of checkpoint keys before it. ``one_line=False``: the
    start-up checks list each problem found on a line of its own."""
    from mmengine.logging import MMLogger
    monkeypatch.setattr(sys, 'argv', [tool, *args])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(osp.join(ROOT, 'tools', tool), run_name='__main__')
    MMLogger._instance_dict.clear()  # their handlers write to this test's captured output, closed after it
    message = str(exited.value.code)
    printed = capfd.readouterr()
    output = printed.out + printed.err
    assert message.startswith('error: ') and (not one_line or '\n' not in message), message
    for noise in ('Traceback', 'unexpected key', 'missing keys'):
        assert noise not in output, output[-3000:]
    return message


def classifier_config(path, imagenet: str, backbone_init) -> str:
    return write_config(path, 'mmpretrain/poolformer_s12_in1k.py', f"""
model = dict(backbone=dict(init_cfg={backbone_init!r}), head=dict(num_classes=3))
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(data_root='{imagenet}'))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{imagenet}'))
test_dataloader = val_dataloader
""")


@pytest.fixture(scope='module')
def classifier(module_tmp_factory):
    """A 3-class PoolFormer-S12 classifier config over generated class folders, and checkpoint files: a random
    one of its model (weights only, no training state), the same cut short, a text file, random bytes, and a
    checkpoint whose backbone is of another architecture."""
    from mmmetaformer.testing import make_imagenet_folders
    folder = module_tmp_factory.mktemp('classifier')
    imagenet = make_imagenet_folders(str(folder / 'imagenet'), splits=(('train', 1), ('val', 1)))
    config = classifier_config(folder / 'cls.py', imagenet, None)
    files = dict(weights=save_random_checkpoint(config, str(folder / 'weights.pth')))
    whole = open(files['weights'], 'rb').read()
    for name, content in (('cut', whole[:len(whole) // 3]), ('text', b'lr = 0.1\n'), ('noise', bytes(range(256)))):
        files[name] = str(folder / f'{name}.pth')
        open(files[name], 'wb').write(content)
    files['other_arch'] = str(folder / 'other_arch.pth')
    torch.save(dict(state_dict={'backbone.stem.conv.weight': torch.zeros(8, 3, 7, 7)}), files['other_arch'])
    image = osp.join(imagenet, 'val', 'n01440764', os.listdir(osp.join(imagenet, 'val', 'n01440764'))[0])
    return dict(config=config, image=image, work=str(folder / 'work'), imagenet=imagenet, **files)


@pytest.mark.e2e
def test_train_refuses_bad_checkpoints_to_resume_from_or_start_from(classifier, tmp_path, monkeypatch, capfd):
    config, work = classifier['config'], classifier['work']

    def train(*args, config=config):
        return tool_error(monkeypatch, capfd, 'train.py', config, '--work-dir', work, *fresh_names(), *args)

    assert f'{classifier["cut"]} is a truncated zip archive' in train('--resume', classifier['cut'])
    assert f'{classifier["weights"]} holds weights without the training state needed to resume' in \
        train('--resume', classifier['weights'])
    assert f'load_from={classifier["other_arch"]} is a checkpoint of another architecture' in \
        train(f'load_from={classifier["other_arch"]}')
    pretrained = classifier_config(tmp_path / 'pretrained.py', classifier['imagenet'],
                                   dict(type='Pretrained', checkpoint=classifier['text']))
    assert f'{classifier["text"]} is not a torch checkpoint but a text file' in train(config=pretrained)
    assert not [name for name in os.listdir(work) if name.endswith('.pth')]


@pytest.mark.e2e
def test_the_other_tools_refuse_bad_checkpoints_in_one_line(classifier, tmp_path, monkeypatch, capfd):
    config, image = classifier['config'], classifier['image']
    other_size = write_config(tmp_path / 's24.py', 'mmpretrain/poolformer_s24_in1k.py',
                              'model = dict(backbone=dict(init_cfg=None), head=dict(num_classes=3))\n')
    message = tool_error(monkeypatch, capfd, 'inference.py', other_size, classifier['weights'], image,
                         '--out-dir', str(tmp_path / 'out'), '--device', 'cpu')
    assert f'{classifier["weights"]} does not fit the model of this config' in message
    assert 'is a truncated zip archive' in tool_error(
        monkeypatch, capfd, 'vis_cam.py', image, config, classifier['cut'], '--save-path', str(tmp_path / 'c.png'))
    assert 'is not a torch checkpoint but a text file' in tool_error(
        monkeypatch, capfd, 'vis_featmap.py', image, config, classifier['text'], '--save-path',
        str(tmp_path / 'f.png'))
    assert f'{classifier["noise"]} is not a torch checkpoint (an unknown binary format' in tool_error(
        monkeypatch, capfd, 'export_onnx.py', config, classifier['noise'], '--out', str(tmp_path / 'm.onnx'))
    assert f'{classifier["cut"]} is a truncated zip archive' in tool_error(
        monkeypatch, capfd, 'convert_checkpoint.py', classifier['cut'], str(tmp_path / 'converted.pth'))
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'm.onnx').exists()
    assert not (tmp_path / 'converted.pth').exists()


@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    """The generated 3-class shapes data (4 training and 2 validation images)."""
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 4), ('val', 2)))


def detector_config(tmp_path, root: str, classes=('square', 'circle', 'triangle')) -> str:
    body = DET_TINY.format(root=root, model_extra=', bbox_head=dict(num_classes=3)', mask=False, epochs=1)
    body = body.replace("classes=('square', 'circle', 'triangle')", f'classes={tuple(classes)!r}')
    return write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py', body)


@pytest.mark.e2e
def test_a_typo_in_a_class_name_and_unknown_category_ids_stop_training(shapes, tmp_path, monkeypatch, capfd):
    root = str(tmp_path / 'shapes')
    shutil.copytree(shapes, root)
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    content = json.load(open(ann_file))
    for annotation, category in zip(content['annotations'], (7, 99, 99)):
        annotation['category_id'] = category
    json.dump(content, open(ann_file, 'w'))
    config = detector_config(tmp_path, root, ('square', 'circle', 'triangel'))
    message = tool_error(monkeypatch, capfd, 'train.py', config, '--work-dir', str(tmp_path / 'work'),
                         *fresh_names(), one_line=False)
    assert ("train_dataloader.dataset: the classes 'triangel' (did you mean 'triangle'?) are no category of "
            f"{ann_file} (its categories: square, circle, triangle)") in message
    triangles = sum(annotation['category_id'] == 3 for annotation in content['annotations'])
    assert (f"train_dataloader.dataset: {3 + triangles} annotations of {ann_file} have a category that is no "
            f"configured class and would be dropped (their objects learned as background): id 3 ('triangle', no "
            f"configured class): {triangles}, id 7 (no category of the file): 1, id 99 (no category of the file): 2"
            ) in message
    assert 'data_checks=dict(ignore_other_categories=True)' in message
    assert "val_dataloader.dataset: the classes 'triangel' (did you mean 'triangle'?)" in message


@pytest.mark.e2e
def test_ignored_category_ids_and_class_problems_of_each_library(shapes):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    from mmmetaformer.engine.hooks.startup_checks import coco_class_problems, library_class_problem
    squares = CocoDataset(data_root=shapes, ann_file='annotations/instances_train.json',
                          data_prefix=dict(img='train/'), metainfo=dict(classes=('square', )), pipeline=[])
    labels = [annotation['category_id'] for annotation in
              json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))['annotations']]
    assert labels.count(2) and labels.count(3)
    problem, = coco_class_problems(squares, 'train', ignore_other_categories=False)
    assert f"id 2 ('circle', no configured class): {labels.count(2)}, id 3 ('triangle', no configured class): " \
           f"{labels.count(3)}." in problem
    assert coco_class_problems(squares, 'train', ignore_other_categories=True) == []
    init_default_scope('mmseg')
    import mmseg.datasets  # noqa: F401  (registers the data sets)
    assert library_class_problem(dict(type='ADE20KDataset', metainfo=dict(classes=('wall', 'bulding'))),
                                 'train') == (
        "train_dataloader.dataset: the classes 'bulding' (did you mean 'building'?) are not classes of "
        "ADE20KDataset (its classes: wall, building, sky, floor, tree, ceiling, road, bed , windowpane, grass, ... "
        "(140 more)); give a subset of them in metainfo=dict(classes=(...)), or another dataset type for other "
        "classes.")


@pytest.mark.e2e
def test_class_folders_named_in_another_order_stop(module_tmp_factory):
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import CustomDataset

    from mmmetaformer.engine.hooks.startup_checks import folder_class_problems
    from mmmetaformer.testing import make_imagenet_folders
    root = make_imagenet_folders(str(module_tmp_factory.mktemp('folders')), classes=('cat', 'dog'),
                                 splits=(('train', 1), ))
    init_default_scope('mmpretrain')

    def problems(classes):
        dataset = CustomDataset(data_root=root, data_prefix='train', metainfo=dict(classes=classes), pipeline=[])
        return folder_class_problems(dataset, 'train', classes_named=True)

    assert problems(('cat', 'dog')) == []
    swapped, = problems(('dog', 'cat'))
    assert "the samples of folder 'cat' get label 0, which the classes name 'dog'" in swapped
    assert "classes=('cat', 'dog')" in swapped
    typo, = problems(('cat', 'dgo'))
    assert "the classes 'dgo' (did you mean 'dog'?) are no class folder of the data set" in typo


@pytest.mark.e2e
def test_missing_and_corrupt_images_are_all_reported_before_training(shapes, tmp_path, monkeypatch, capfd):
    root = str(tmp_path / 'shapes')
    shutil.copytree(shapes, root)
    missing, corrupt = (osp.join(root, 'train', f'train_0000{index}.jpg') for index in (1, 2))
    os.remove(missing)
    data = open(corrupt, 'rb').read()
    open(corrupt, 'wb').write(data[:len(data) // 2])
    config = detector_config(tmp_path, root)
    message = tool_error(monkeypatch, capfd, 'train.py', config, '--work-dir', str(tmp_path / 'work'),
                         *fresh_names(), one_line=False)
    assert f'2 of the 4 samples of the training data set have bad files: {missing} (missing); {corrupt} (cannot ' \
           f'be decoded' in message
    assert 'data_checks=dict(skip_bad_images=True)' in message

    from mmdet.datasets import CocoDataset

    from mmmetaformer.engine.image_checks import check_images
    dataset = CocoDataset(data_root=root, ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                          metainfo=dict(classes=('square', 'circle', 'triangle')), pipeline=[])
    warned = []
    check_images(dataset, 'train', dict(images='all', skip_bad_images=True), warned.append)
    assert len(dataset) == 2 and {dataset.get_data_info(i)['img_path'] for i in range(2)}.isdisjoint({missing,
                                                                                                    corrupt})
    assert warned[0].endswith('Running without these samples (data_checks.skip_bad_images=True).')
    exists_only = CocoDataset(data_root=root, ann_file='annotations/instances_train.json',
                              data_prefix=dict(img='train/'), metainfo=dict(classes=('square', 'circle', 'triangle')),
                              pipeline=[])
    with pytest.raises(ValueError, match='1 of the 4 samples') as error:
        check_images(exists_only, 'train', dict(images='exist', skip_bad_images=False), warned.append)
    assert 'decoded' not in str(error.value)


@pytest.mark.e2e
def test_invalid_backbone_settings_are_one_line_errors(classifier, monkeypatch, capfd):
    import mmmetaformer as mmf
    from mmmetaformer.errors import InvalidSettingError
    with pytest.raises(InvalidSettingError, match="PoolFormer has no arch 's120' \\(did you mean 's12'\\?\\)"):
        mmf.PoolFormer('s120')
    with pytest.raises(InvalidSettingError, match='out_indices must be a non-empty subset of stages 0-3, got \\(4,\\)'):
        mmf.PoolFormer('s12', out_indices=(4, ))
    message = tool_error(monkeypatch, capfd, 'train.py', classifier['config'], '--work-dir', classifier['work'],
                         *fresh_names(), 'model.backbone.arch=s120')
    assert "PoolFormer has no arch 's120' (did you mean 's12'?)" in message


@pytest.mark.e2e
def test_segmentation_maps_with_labels_beyond_the_classes_stop(tmp_path):
    import numpy as np
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    from PIL import Image

    from mmmetaformer.engine.hooks.startup_checks import StartupCheckError
    from mmmetaformer.engine.image_checks import check_images
    from mmmetaformer.testing import make_ade20k_like
    root = make_ade20k_like(str(tmp_path / 'ade'), splits=(('training', 2), ), size=(32, 32))
    label_map = osp.join(root, 'annotations', 'training', 'ADE_training_00000001.png')
    labels = np.array(Image.open(label_map))
    labels[:4, :4], labels[4:8, :4] = 200, 255  # 200: no class; 255: ignored
    Image.fromarray(labels).save(label_map)
    init_default_scope('mmseg')
    dataset = ADE20KDataset(data_root=root, data_prefix=dict(img_path='images/training',
                                                             seg_map_path='annotations/training'), pipeline=[])
    with pytest.raises(StartupCheckError) as error:
        check_images(dataset, 'train', dict(images='all', skip_bad_images=False), print)
    assert str(error.value).startswith(
        f"1 of the 2 samples of the training data set have bad files: {label_map} (label values 200 beyond the data "
        "set's 150 classes (1-150, 0 unlabelled, 255 ignored))")
