"""The options of docs/en/user_guides/data.md, "Data outside data/", read from the page itself: they move every data
loader and evaluator of the configs of each library to another root, and `tools/test.py` runs on COCO-layout data
elsewhere with them up to its metric."""
import os.path as osp
import re
from pathlib import Path

import pytest

from conftest import ROOT
from e2e import RETINA_HEAD, load_cfg, logged_metric, run_tool, save_random_checkpoint, write_config

DATA_GUIDE = Path(ROOT) / 'docs' / 'en' / 'user_guides' / 'data.md'
# the placeholder root of each library's options in the guide, and configs of every _base_ data set of the library
PLACEHOLDERS = {
    'mmdet': ('/path/coco/', ['mmdet/retinanet_poolformer_s12_1x.py', 'mmdet/mask_rcnn_poolformer_s12_1x.py']),
    'mmseg': ('/path/ADEChallengeData2016/', ['mmseg/fpn_poolformer_s12_40k_ade20k.py',
                                              'mmseg/upernet_caformer_s18_160k_ade20k.py']),
    'mmpretrain': ('/path/imagenet/', ['mmpretrain/poolformer_s12_in1k.py', 'mmpretrain/caformer_s18_384_in1k.py']),
}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def documented_options(placeholder: str) -> dict:
    """The ``--cfg-options`` of the guide's block for ``placeholder``, as key -> value."""
    blocks = re.findall(r'^```text\n(.*?)^```', DATA_GUIDE.read_text(), re.S | re.M)
    block, = [block for block in blocks if '--cfg-options' in block and placeholder in block]
    words = block.replace('\\\n', ' ').split()
    assert words[0] == '--cfg-options'
    return dict(word.split('=', 1) for word in words[1:])


def strings_in(item):
    if isinstance(item, dict):
        for value in item.values():
            yield from strings_in(value)
    elif isinstance(item, (list, tuple)):
        for value in item:
            yield from strings_in(value)
    elif isinstance(item, str):
        yield item


@pytest.mark.parametrize('library', sorted(PLACEHOLDERS))
def test_the_documented_options_move_every_loader_and_evaluator(library):
    from mmmetaformer.utils.configs import leaf_datasets
    placeholder, configs = PLACEHOLDERS[library]
    options = documented_options(placeholder)
    assert {f'{loader}.dataset.data_root' for loader in LOADERS} <= set(options)
    for config in configs:
        cfg = load_cfg(config, options)
        for loader in LOADERS:
            roots = [leaf['data_root'] for leaf in leaf_datasets(cfg[loader].dataset)]
            assert roots == [placeholder], (config, loader, roots)
        for evaluator in ('val_evaluator', 'test_evaluator'):
            files = [text for text in strings_in(cfg[evaluator].to_dict()) if '/' in text]
            assert all(text.startswith(placeholder) for text in files), (config, evaluator, files)
        # nothing of the data is left under data/
        left = [text for name in LOADERS + ('val_evaluator', 'test_evaluator')
                for text in strings_in(cfg[name].to_dict()) if text.startswith('data/')]
        assert not left, (config, left)


@pytest.mark.e2e
@pytest.mark.slow
def test_tools_test_runs_on_coco_elsewhere_with_the_documented_options(tmp_path):
    """The published RetinaNet config (its data set and evaluator as they are, on a 3-class head and small images)
    tests COCO-layout data outside data/, run from a folder without data/, and prints its mAP."""
    from mmmetaformer.testing import make_coco_shapes
    classes = ('square', 'circle', 'triangle')
    root = make_coco_shapes(str(tmp_path / 'coco'), splits=(('val2017', 2),))
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py', f"""
model = dict(backbone=dict(init_cfg=None){RETINA_HEAD})
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(
    metainfo=dict(classes={classes!r}),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
              dict(type='LoadAnnotations', with_bbox=True),
              dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
""")
    checkpoint = save_random_checkpoint(config, str(tmp_path / 'retina.pth'), classes)
    options = [f'{key}={value.replace("/path/coco/", root.rstrip("/") + "/")}'
               for key, value in documented_options('/path/coco/').items()]
    work = tmp_path / 'run'
    work.mkdir()
    result = run_tool([osp.join(ROOT, 'tools', 'test.py'), config, checkpoint, '--work-dir', str(work),
                       '--cfg-options', *options], cwd=str(work))
    assert 0.0 <= logged_metric(result, 'coco/bbox_mAP') <= 1.0
