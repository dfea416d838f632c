"""Runs whose settings contradict their data or name missing files stop before their first iteration, on every
process, with a message naming the settings (mmmetaformer/startup_checks.py, run by CrashSafeRunner)."""
import glob
import itertools
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT
from e2e import DET_TINY, build_config_model, free_port, tiny_seg_config, write_config

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

RETINA_3 = ', bbox_head=dict(num_classes=3)'
NAMES = (f'run{index}' for index in itertools.count())  # mmengine keys loggers and scopes by experiment name


@pytest.fixture(scope='module')
def shapes(module_tmp_factory):
    from mmmetaformer.testing import make_coco_shapes
    return make_coco_shapes(str(module_tmp_factory.mktemp('shapes')), splits=(('train', 4), ('val', 2)))


@pytest.fixture(scope='module')
def imagenet(module_tmp_factory):
    from mmmetaformer.testing import make_imagenet_folders
    return make_imagenet_folders(str(module_tmp_factory.mktemp('imagenet')), splits=(('train', 1), ('val', 1)))


def retinanet_config(tmp_path, shapes: str, model_extra: str = '') -> str:
    return write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                        DET_TINY.format(root=shapes, model_extra=model_extra, mask=False, epochs=1))


def refused(config: str, tmp_path, method: str = 'train', **options) -> str:
    """Build the runner of ``config`` in this process, run ``method`` and return the start-up check's message;
    asserts that no iteration ran and no checkpoint was written."""
    from mmengine.config import Config

    from mmmetaformer.engine.hooks.startup_checks import StartupCheckError
    from mmmetaformer.utils.cli import build_runner
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    name = next(NAMES)
    cfg.update(work_dir=str(tmp_path / 'work'), launcher='none', experiment_name=name)
    if cfg.get('visualizer'):  # mmengine keeps one visualizer per name, saving into the work dir of the first run
        cfg.visualizer.name = name
    runner = build_runner(cfg)
    with pytest.raises(StartupCheckError) as error:
        getattr(runner, method)()
    assert runner.iter == 0 and not glob.glob(str(tmp_path / 'work' / '**' / '*.pth'), recursive=True)
    return str(error.value)


@pytest.mark.e2e
@pytest.mark.parametrize('tool', ['ours', 'mmdet'])
def test_detector_with_80_head_classes_over_3_class_data_stops_before_training(shapes, tmp_path, tool):
    if tool == 'ours':
        train = osp.join(ROOT, 'tools', 'train.py')
    else:
        import mmdet
        train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
        if not osp.exists(train):
            pytest.skip('this mmdet build ships no tools/')
    work = tmp_path / 'work'
    result = subprocess.run([sys.executable, train, retinanet_config(tmp_path, shapes), '--work-dir', str(work)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert ('model.bbox_head.num_classes=80 but the training data set has 3 classes (metainfo classes: square, '
            'circle, triangle); set num_classes=3 in model.bbox_head') in log
    assert 'Epoch(train)' not in log and 'Iter(train)' not in log
    assert not glob.glob(str(work / '**' / '*.pth'), recursive=True)


@pytest.mark.e2e
def test_every_class_head_of_mask_rcnn_is_checked_and_its_rpn_is_not(shapes):
    from mmdet.datasets import CocoDataset

    from mmmetaformer.engine.hooks.startup_checks import class_count_problems, class_heads
    detector = build_config_model('mmdet/mask_rcnn_poolformer_s12_1x.py')
    assert class_heads(detector) == [('model.roi_head.bbox_head', 80), ('model.roi_head.mask_head', 80)]
    dataset = CocoDataset(data_root=shapes, ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                          metainfo=dict(classes=('square', 'circle', 'triangle')), pipeline=[])
    problems = class_count_problems(detector, dataset, 'val')
    assert [problem.split(' but')[0] for problem in problems] == [
        'model.roi_head.bbox_head.num_classes=80', 'model.roi_head.mask_head.num_classes=80']
    assert 'the validation data set has 3 classes' in problems[0]
    assert class_count_problems(detector, CocoDataset(data_root=shapes, ann_file='annotations/instances_val.json',
                                                      data_prefix=dict(img='val/'), pipeline=[]), 'val') == []


@pytest.mark.e2e
def test_segmentation_test_run_checks_decode_and_auxiliary_heads(tmp_path):
    from mmmetaformer.testing import make_ade20k_like
    ade = make_ade20k_like(str(tmp_path / 'ade'), splits=(('training', 1), ('validation', 1)), size=(64, 64))
    auxiliary = [dict(type='FCNHead', in_channels=128, in_index=1, channels=16, num_convs=1, num_classes=classes,
                      norm_cfg=dict(type='BN'), loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
                 for classes in (150, 19)]
    config = tiny_seg_config(tmp_path, ade, 'fpn_poolformer_s12_40k_ade20k')
    message = refused(config, tmp_path, 'test', **{'model.auxiliary_head': auxiliary})
    assert 'model.auxiliary_head[1].num_classes=19 but the test data set has 150 classes' in message
    assert 'decode_head' not in message and 'auxiliary_head[0]' not in message


@pytest.mark.e2e
def test_classifier_whose_config_names_other_classes_stops(imagenet, tmp_path):
    config = write_config(tmp_path / 'cls.py', 'mmpretrain/poolformer_s12_in1k.py', f"""
model = dict(backbone=dict(init_cfg=None))
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root='{imagenet}', metainfo=dict(classes=('fish', 'shark', 'ray'))))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{imagenet}'))
""")
    message = refused(config, tmp_path)
    assert 'model.head.num_classes=1000 but the training data set has 3 classes (metainfo classes: fish, shark, ' \
           'ray); set num_classes=3 in model.head' in message
    assert 'validation' not in message  # its classes are the folders found: 3 within the head's 1000


@pytest.mark.e2e
def test_class_folders_found_on_disk_may_be_fewer_than_the_head_but_not_more(imagenet):
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import CustomDataset
    from mmpretrain.registry import MODELS

    from mmmetaformer.engine.hooks.startup_checks import class_count_problems
    init_default_scope('mmpretrain')
    dataset = CustomDataset(data_root=imagenet, data_prefix='train', pipeline=[])

    def classifier(num_classes):
        return MODELS.build(dict(type='ImageClassifier', backbone=dict(type='mmmetaformer.PoolFormer', arch='s12'),
                                 neck=dict(type='GlobalAveragePooling'),
                                 head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=512)))
    assert class_count_problems(classifier(1000), dataset, 'train', classes_named=False) == []
    assert class_count_problems(classifier(3), dataset, 'train', classes_named=False) == []
    problem, = class_count_problems(classifier(2), dataset, 'train', classes_named=False)
    assert problem.startswith('model.head.num_classes=2 but the training data set has 3 classes (metainfo classes: '
                              'n01440764, n01443537, n01484850)')
    assert class_count_problems(classifier(1000), dataset, 'train', classes_named=True)


@pytest.mark.e2e
def test_batch_size_above_a_drop_last_training_set_stops(shapes, tmp_path):
    message = refused(retinanet_config(tmp_path, shapes, RETINA_3), tmp_path, **{
        'train_dataloader.batch_size': 5, 'train_dataloader.batch_sampler.drop_last': True})
    assert 'train_dataloader.batch_size=5 with drop_last=True but the training data set has 4 samples: no ' \
           'iteration would run. Lower train_dataloader.batch_size to at most 4' in message


@pytest.mark.e2e
@pytest.mark.parametrize('resume', [False, True])
def test_missing_load_from_or_resume_file_stops(shapes, tmp_path, resume):
    missing = str(tmp_path / 'nowhere' / 'epoch_3.pth')
    message = refused(retinanet_config(tmp_path, shapes, RETINA_3), tmp_path, load_from=missing, resume=resume)
    assert f'load_from={missing}, the checkpoint to {"resume from (resume=True)" if resume else "start from"}, ' \
           'does not exist' in message


def _check_on_one_rank(rank: int, port: str, results) -> None:
    import torch.distributed as dist

    from mmmetaformer.engine.hooks.startup_checks import StartupCheckError, stop_on_problems
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        stop_on_problems(['load_from=x.pth, the checkpoint to start from, does not exist.'] if rank == 1 else [])
        results[rank] = 'went on'
    except StartupCheckError as error:
        results[rank] = str(error)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_problem_found_by_one_process_stops_every_process():
    """A file missing on one node only: every process stops (none waits for the others in the first
    all-reduce)."""
    context = torch.multiprocessing.get_context('spawn')
    with context.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(_check_on_one_rank, args=(free_port(), results), nprocs=2,
                                              start_method='spawn')
        assert sorted(results.keys()) == [0, 1]
        assert all('load_from=x.pth' in message for message in results.values())


@pytest.mark.e2e
def test_two_node_dist_train_stops_on_every_node(shapes, tmp_path):
    """NNODES=2 torchrun runs of dist_train.sh on one machine (one process each) both stop with the message."""
    config, port = retinanet_config(tmp_path, shapes), free_port()
    nodes = [subprocess.Popen(['bash', 'tools/dist_train.sh', config, '1', '--work-dir', str(tmp_path / 'work')],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHON=sys.executable,
                                       NNODES='2', NODE_RANK=str(rank), PORT=port))
             for rank in (0, 1)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, log in zip(nodes, logs):
        assert node.returncode != 0
        assert 'model.bbox_head.num_classes=80 but the training data set has 3 classes' in log
        assert 'Epoch(train)' not in log


def test_data_checks_settings_take_booleans_for_images_and_refuse_unknown_keys_and_values():
    from mmmetaformer.engine.hooks.startup_checks import DEFAULT_DATA_CHECKS, data_checks_settings
    from mmmetaformer.errors import InvalidSettingError
    assert data_checks_settings(dict()) == DEFAULT_DATA_CHECKS
    assert data_checks_settings(dict(data_checks=dict(images=False)))['images'] == 'off'
    assert data_checks_settings(dict(data_checks=dict(images=True)))['images'] == 'auto'
    with pytest.raises(InvalidSettingError, match="data_checks has no setting 'skip_bad_image' \\(did you mean "
                                                  "'skip_bad_images'\\?\\); its settings: images, skip_bad_images, "
                                                  'ignore_other_categories'):
        data_checks_settings(dict(data_checks=dict(skip_bad_image=True)))
    with pytest.raises(InvalidSettingError, match="data_checks.images='sampel' \\(did you mean 'sample'\\?\\) must "
                                                  'be one of auto, all, sample, exist, off'):
        data_checks_settings(dict(data_checks=dict(images='sampel')))


class LabelList(torch.utils.data.Dataset):
    """A classification annotation list: its classes and each sample's label (``get_gt_labels``)."""

    def __init__(self, classes, labels, ann_file: str = 'meta/train.txt') -> None:
        self.metainfo, self.labels, self.ann_file = dict(classes=classes), labels, ann_file

    def get_gt_labels(self):
        return torch.tensor(self.labels).numpy()

    def __len__(self) -> int:
        return len(self.labels)


def test_labels_beyond_the_classes_are_counted_per_label_in_each_wrapped_data_set():
    from mmengine.config import Config

    from mmmetaformer.engine.hooks.startup_checks import class_name_problems, label_problems
    good = LabelList(('cat', 'dog'), [0, 1, 1])
    bad = LabelList(('cat', 'dog'), [0, 2, 5, 2, 1], ann_file='meta/extra.txt')
    assert label_problems(good, 'train') == []
    expected = ('train_dataloader.dataset: labels 2 (2 samples), 5 (1 samples) of meta/extra.txt are beyond its 2 '
                'classes (0-1); name every class in metainfo=dict(classes=(...)) or correct the labels.')
    assert label_problems(bad, 'train') == [expected]
    runner = SimpleNamespace(cfg=Config(dict(train_dataloader=dict(dataset=dict(type='ConcatDataset')))))
    concatenated = SimpleNamespace(datasets=[good, SimpleNamespace(dataset=bad)])  # a concatenation, a repeat
    assert class_name_problems(runner, concatenated, 'train') == [expected]


def test_classes_that_an_mmseg_data_set_type_has_pass_the_config_check():
    from mmseg.datasets import ADE20KDataset

    from mmmetaformer.engine.hooks.startup_checks import library_class_problem
    assert library_class_problem(dict(type=ADE20KDataset, metainfo=dict(classes=('wall', 'sky'))), 'train') is None
    assert "the classes 'flor' (did you mean 'floor'?) are not classes of ADE20KDataset" in library_class_problem(
        dict(type=ADE20KDataset, metainfo=dict(classes=('wall', 'flor'))), 'val')


def test_an_empty_training_set_stops_and_a_loop_without_a_data_loader_is_skipped():
    from mmengine.config import Config

    from mmmetaformer.engine.hooks.startup_checks import StartupCheckError, check_run_settings
    empty = torch.utils.data.DataLoader([], batch_size=2)
    runner = SimpleNamespace(_load_from=None, _resume=False, model=torch.nn.Linear(2, 2), cfg=Config(dict()),
                             train_loop=SimpleNamespace(dataloader=empty), val_loop=SimpleNamespace())
    with pytest.raises(StartupCheckError) as error:
        check_run_settings(runner, ['train', 'val'])
    assert str(error.value) == ('the run would fail or go wrong; nothing has run yet:\n  the training data set '
                                '(train_dataloader.dataset) is empty (after its filters): no iteration would run.')
    check_run_settings(runner, ['val'])  # a validation loop of no data loader (e.g. not built): nothing to check
