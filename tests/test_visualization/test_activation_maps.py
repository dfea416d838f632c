"""Class activation maps of classifiers of all six families (tools/vis_cam.py, the grad-cam package) and feature
maps of detector, segmentor and classifier backbones (tools/vis_featmap.py), on small generated images."""
import os.path as osp
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from e2e import DET_TINY, TINY_POOLFORMER_ARCH, run_tool, run_tool_here, save_random_checkpoint, write_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

pytest.importorskip('mmpretrain')
pytest.importorskip('pytorch_grad_cam')

SMALLEST = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
            'caformer_s18']
CROP = 64
# the published test pipeline at a small size: short side to 72, centre crop 64
SMALL_PIPELINE = {'test_dataloader.dataset.pipeline.1.scale': 72, 'test_dataloader.dataset.pipeline.2.crop_size': CROP}


@pytest.fixture(scope='module')
def image(module_tmp_factory) -> str:
    """A 96x80 picture: a bright disc on a dark noisy background."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, size=(80, 96, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:80, :96]
    pixels[(yy - 40)**2 + (xx - 50)**2 < 15**2] = (230, 200, 40)
    path = str(module_tmp_factory.mktemp('image') / 'disc.jpg')
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope='module')
def classifiers(module_tmp_factory):
    """name -> (config, checkpoint with random weights)."""
    folder = module_tmp_factory.mktemp('classifiers')
    cache = {}

    def get(name):
        if name not in cache:
            config = osp.join(ROOT, 'configs', 'mmpretrain', f'{name}_in1k.py')
            cache[name] = config, save_random_checkpoint(config, str(folder / f'{name}.pth'))
        return cache[name]
    return get


def assert_picture(path: str, size) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert('RGB'))
    assert pixels.shape[:2] == size
    assert pixels.std() > 10, 'blank picture'
    return pixels


@pytest.mark.parametrize('name', SMALLEST)
def test_cam_of_every_family(name, classifiers, image, tmp_path):
    from mmmetaformer.visualization import draw_cam
    config, checkpoint = classifiers(name)
    out = str(tmp_path / 'cam.png')
    result = draw_cam(image, config, checkpoint, out, target_category=7, device='cpu', cfg_options=SMALL_PIPELINE)
    assert result['category'] == 7 and 0 < result['score'] < 1
    assert result['target_layers'] == ['backbone.stages.3.blocks.-1']
    assert_picture(out, (CROP, CROP))


def test_gradcam_of_channels_last_blocks_is_the_textbook_one(classifiers, image):
    """The CAM library sees the block output as (B, C, H, W): its Grad-CAM equals the one computed here by hand
    (channel weights = mean gradient of the class logit, ReLU of the weighted sum, scaled to [0, 1])."""
    import cv2

    from mmmetaformer.apis.inference import build_inferencer
    from mmmetaformer.visualization import class_activation_map, find_layer, preprocess_image
    config, checkpoint = classifiers('caformer_s18')
    inferencer = build_inferencer(config, checkpoint, 'cpu', SMALL_PIPELINE)
    model = inferencer.model
    inputs, seen = preprocess_image(inferencer, image)
    assert inputs.shape == (1, 3, CROP, CROP) and seen.shape == (CROP, CROP, 3)
    layer = find_layer(model, 'backbone.stages.3.blocks.-1')
    assert layer is model.backbone.stages[3].blocks[-1]
    heatmap, category, _ = class_activation_map(model, inputs, [layer], 'GradCAM', target_category=3)

    kept = []
    hook = layer.register_forward_hook(lambda module, args, output: kept.append(output))
    logits = model(inputs)
    hook.remove()
    tokens = kept[0]  # (1, H, W, C)
    gradient, = torch.autograd.grad(logits[0, 3], tokens)
    weights = gradient[0].mean((0, 1))
    expected = torch.relu((tokens[0] * weights).sum(-1)).detach().numpy()
    expected = (expected - expected.min()) / (expected.max() - expected.min() + 1e-7)
    expected = cv2.resize(expected, (CROP, CROP))
    assert category == 3 and heatmap.shape == (CROP, CROP)
    assert heatmap.std() > 0.05
    np.testing.assert_allclose(heatmap, expected, atol=1e-4)


def test_every_cam_method_and_other_layers(classifiers, image):
    from mmmetaformer.apis.inference import build_inferencer
    from mmmetaformer.visualization import CAM_METHODS, class_activation_map, find_layer, preprocess_image
    config, checkpoint = classifiers('poolformer_s12')
    inferencer = build_inferencer(config, checkpoint, 'cpu', SMALL_PIPELINE)
    model = inferencer.model
    inputs, _ = preprocess_image(inferencer, image)
    for method in CAM_METHODS:
        heatmap, _, _ = class_activation_map(model, inputs, [find_layer(model, 'backbone.stages.3.blocks.-1')],
                                             method)
        assert heatmap.shape == (CROP, CROP) and 0 <= heatmap.min() and heatmap.max() <= 1, method
    # a stage stands for its output; a block's token mixer is channels-last too; two layers are averaged
    layers = [find_layer(model, 'backbone.stages.2'), find_layer(model, 'backbone.stages.3.blocks.0.token_mixer')]
    assert layers[0] is model.backbone.stages[2].blocks
    heatmap, _, _ = class_activation_map(model, inputs, layers, 'GradCAM++')
    assert heatmap.shape == (CROP, CROP)
    with pytest.raises(ValueError, match="no layer 'backbone.stages.7'"):
        find_layer(model, 'backbone.stages.7')
    with pytest.raises(ValueError, match='mix channels-last'):
        class_activation_map(model, inputs, [layers[0], model.backbone.stem.conv])
    with pytest.raises(ValueError, match='not one of the model'):
        class_activation_map(model, inputs, layers, target_category=1000)
    with pytest.raises(ValueError, match='unknown CAM method'):
        class_activation_map(model, inputs, layers, 'NoCAM')


def test_cam_tool_on_caformer(classifiers, image, tmp_path):
    config, checkpoint = classifiers('caformer_s18')
    out = tmp_path / 'cam.png'
    result = run_tool(['tools/vis_cam.py', image, config, checkpoint, '--save-path', str(out), '--method',
                       'GradCAM++', '--device', 'cpu', '--cfg-options',
                       *[f'{key}={value}' for key, value in SMALL_PIPELINE.items()]])
    assert 'GradCAM++ of class' in result.stdout
    assert_picture(str(out), (CROP, CROP))


def assert_feature_grid(grid: np.ndarray, path: str, input_size) -> None:
    """Four panels (2 x 2), each a title strip over the network input (at least 256 wide), none blank."""
    height, width = input_size
    scale = max(1, 256 / width)
    panel = (round(height * scale) + 28, round(width * scale))
    assert grid.shape == (2 * panel[0], 2 * panel[1], 3)
    pixels = assert_picture(path, grid.shape[:2])
    for row in range(2):
        for col in range(2):
            drawn = pixels[row * panel[0] + 28:(row + 1) * panel[0], col * panel[1]:(col + 1) * panel[1]]
            assert drawn.std() > 10


def test_feature_maps_of_a_classifier(classifiers, image, tmp_path):
    from mmmetaformer.visualization import draw_feature_maps
    config, checkpoint = classifiers('convformer_s18')
    out = str(tmp_path / 'cls.png')
    grid = draw_feature_maps(image, config, out, checkpoint, channel_reduction='select_max', device='cpu',
                             cfg_options=SMALL_PIPELINE)
    assert_feature_grid(grid, out, (CROP, CROP))


def test_feature_maps_of_a_detector_without_checkpoint(image, tmp_path):
    from mmmetaformer.visualization import draw_feature_maps
    config = write_config(tmp_path / 'retina.py', 'mmdet/retinanet_poolformer_s12_1x.py',
                          DET_TINY.format(root=tmp_path, model_extra=', bbox_head=dict(num_classes=3)', mask=False,
                                          epochs=1))
    out = str(tmp_path / 'det.png')
    grid = draw_feature_maps(image, config, out, device='cpu')
    # resized to 128 on the long side (128 x 107), padded to multiples of 32 by the data preprocessor
    assert_feature_grid(grid, out, (128, 128))


def test_feature_maps_of_a_segmentor_through_the_tool(image, tmp_path):
    config = osp.join(ROOT, 'configs', 'mmseg', 'fpn_caformer_s18_40k_ade20k.py')
    out = tmp_path / 'seg.png'
    run_tool(['tools/vis_featmap.py', image, config, '--save-path', str(out), '--device', 'cpu', '--cfg-options',
              'model.backbone.init_cfg=None', 'test_dataloader.dataset.pipeline.1.scale=(128,64)'])
    # the image (96 x 80) resized to fit 128 x 64 keeping its ratio (77 x 64), then to multiples of 32 (96 x 64)
    size = np.asarray(Image.open(out)).shape[:2]
    assert size == (2 * (round(64 * 256 / 96) + 28), 2 * 256)
    assert_picture(str(out), size)


def test_cam_tool_with_its_layer_and_class_options_and_its_refusals(classifiers, image, tmp_path):
    """Two target layers averaged and a chosen class through the command line; a detector or segmentor config, an
    unknown layer and an image that cannot be read each end with one error line."""
    config, checkpoint = classifiers('poolformer_s12')
    out = tmp_path / 'cam.png'
    small = ['--cfg-options', *[f'{key}={value}' for key, value in SMALL_PIPELINE.items()]]
    printed = run_tool_here(['tools/vis_cam.py', image, config, checkpoint, '--save-path', str(out), '--target-layers',
                             'backbone.stages.2', 'backbone.stages.3.blocks.0.token_mixer', '--target-category', '5',
                             '--device', 'cpu', *small])
    assert re.fullmatch(rf'GradCAM of class 5, score 0\.\d{{3}}, at backbone\.stages\.2, '
                        rf'backbone\.stages\.3\.blocks\.0\.token_mixer: {re.escape(str(out))}',
                        printed.splitlines()[-1]), printed
    assert_picture(str(out), (CROP, CROP))
    for other in ('mmdet/retinanet_poolformer_s12_1x.py', 'mmseg/fpn_poolformer_s12_40k_ade20k.py'):
        printed = run_tool_here(['tools/vis_cam.py', image, osp.join(ROOT, 'configs', other), checkpoint,
                                 '--save-path', str(tmp_path / 'x.png')], status=1)
        assert printed.splitlines()[-1].startswith(
            f'error: class activation maps need a classifier config (mmpretrain); this is a {other.split("/")[0]} '
            'config: see tools/vis_featmap.py'), printed
    printed = run_tool_here(['tools/vis_cam.py', image, config, checkpoint, '--save-path', str(tmp_path / 'x.png'),
                             '--target-layers', 'backbone.stages.7', '--device', 'cpu', *small], status=1)
    assert printed.splitlines()[-1].startswith("error: ") and "no layer 'backbone.stages.7'" in printed, printed
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a picture')
    printed = run_tool_here(['tools/vis_cam.py', str(broken), config, checkpoint, '--save-path',
                             str(tmp_path / 'x.png'), '--device', 'cpu', *small], status=1)
    assert printed.splitlines()[-1] == f'error: cannot read {broken} as an image'
    assert not (tmp_path / 'x.png').exists()


def test_featmap_tool_with_a_checkpoint_and_the_max_channel(classifiers, image, tmp_path):
    config, checkpoint = classifiers('poolformer_s12')
    out = tmp_path / 'featmaps.png'
    printed = run_tool_here(['tools/vis_featmap.py', image, config, checkpoint, '--save-path', str(out),
                             '--channel-reduction', 'select_max', '--device', 'cpu', '--cfg-options',
                             *[f'{key}={value}' for key, value in SMALL_PIPELINE.items()]])
    assert printed.splitlines()[-1] == f'feature maps of the four stages: {out}'
    assert_picture(str(out), (2 * (256 + 28), 2 * 256))  # the 64x64 crop drawn at least 256 wide


def test_pictures_are_written_in_the_format_of_their_extension_or_refused(tmp_path):
    """RGB in, the same pixels read back (PNG, lossless); an extension OpenCV cannot encode, a picture its encoder
    refuses (JPEG is limited to 65500 pixels a side) and a folder path through a file each fail with the path, and
    leave no file."""
    from mmmetaformer.errors import FileAccessError, InvalidSettingError
    from mmmetaformer.visualization.activation_maps import write_picture
    picture = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = tmp_path / 'new' / 'picture.png'
    write_picture(picture, str(path))
    assert np.array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(InvalidSettingError, match=f"could not write {tmp_path / 'cam'}: OpenCV has no image format "
                                                  r"for the extension '\(none\)'; use e\.g\. \.png or \.jpg"):
        write_picture(picture, str(tmp_path / 'cam'))
    with pytest.raises(InvalidSettingError, match=r"extension '\.xyz'"):
        write_picture(picture, str(tmp_path / 'cam.xyz'))
    with pytest.raises(FileAccessError, match=f"could not write {tmp_path / 'wide.jpg'}: OpenCV could not encode the "
                                              '70000x1 picture as .jpg'):
        write_picture(np.zeros((1, 70000, 3), dtype=np.uint8), str(tmp_path / 'wide.jpg'))
    (tmp_path / 'file').write_text('')
    with pytest.raises(FileAccessError, match=f"could not write {tmp_path / 'file' / 'cam.png'}: "):
        write_picture(picture, str(tmp_path / 'file' / 'cam.png'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file', 'new']


def test_stage_outputs_need_a_metaformer_that_runs_all_four_stages():
    """The four stage outputs (C, H, W) whatever the backbone returns; a backbone that stops early (its last
    out_index) or is no MetaFormer is refused."""
    from torch import nn

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.models import PoolFormer
    from mmmetaformer.visualization import stage_outputs
    arch = {key: value for key, value in TINY_POOLFORMER_ARCH.items() if key != '_delete_'}
    inputs = torch.randn(1, 3, 64, 32)
    maps = stage_outputs(PoolFormer(arch, out_indices=(3, )).eval(), inputs)
    assert [tuple(m.shape) for m in maps] == [(8, 16, 8), (16, 8, 4), (24, 4, 2), (32, 2, 1)]
    with pytest.raises(InvalidSettingError, match=r'the backbone stops after stage 1 \(out_indices=\(0, 1\)\); add '
                                                  'stage 3 to its out_indices'):
        stage_outputs(PoolFormer(arch, out_indices=(0, 1)).eval(), inputs)
    with pytest.raises(InvalidSettingError, match='feature maps need a MetaFormer backbone; this model has a Conv2d'):
        stage_outputs(nn.Conv2d(3, 8, 1), inputs)


def test_feature_maps_refuse_an_unknown_channel_reduction_before_building_the_model(tmp_path):
    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.visualization import draw_feature_maps
    with pytest.raises(InvalidSettingError, match=r"channel_reduction must be one of \('squeeze_mean', "
                                                  r"'select_max'\), got 'mean'"):
        draw_feature_maps('unused.jpg', str(tmp_path / 'absent.py'), str(tmp_path / 'maps.png'),
                          channel_reduction='mean')
    assert not (tmp_path / 'maps.png').exists()
