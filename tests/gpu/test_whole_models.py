"""The main job on a GPU: whole detectors, segmentors and a classifier trained by ``tools/train.py``.

RetinaNet-PoolFormer-S12, Mask R-CNN-PoolFormer-S12, Semantic FPN-PoolFormer-S12, UperNet-CAFormer-S18 and the
PoolFormer-S12 classifier, each on small generated data, for a few dozen iterations in fp16 (``--amp``: mmengine's
``AmpOptimWrapper`` with dynamic loss scaling), bf16 (``optim_wrapper.dtype``) and fp32: finite losses that go down,
a checkpoint, a resumed run (fp16), and ``tools/test.py``'s metric. Before training, the first iteration's loss of
each model is computed on the GPU in fp32 and on the CPU from the same weights and batch, and compared.

Needs mmcv built with its CUDA ops (``MMMETAFORMER_CUDA_ARCH`` in tools/install.sh, or a wheelhouse).
"""
import math
import re
from dataclasses import dataclass
from typing import List

import pytest
import torch

from e2e import DET_TINY, RETINA_HEAD, SEG_TINY, load_cfg, logged_metric, run_tool, tiny_ade_pipelines, write_config

EPOCHS = 3  # the detectors and the classifier; the segmentors run ITERATIONS
ITERATIONS = 36  # per run: a batch of 2 (classification 4) generated images per iteration
RESUMED = ITERATIONS // EPOCHS  # the fp16 run then resumes for one more epoch, or as many iterations
# The first iteration's total loss, GPU fp32 against CPU fp32, same weights and batch, TF32 off on the GPU. Left
# apart: the float sums in a different order and, for the two-stage detector, RoIAlign's and NMS's CUDA kernels.
FIRST_LOSS_TOLERANCE = 2e-3
PRECISIONS = {
    'fp16': ['--amp'],
    'bf16': ['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper', 'optim_wrapper.dtype=bfloat16'],
    'fp32': [],
}
SHORT_WARMUP = "param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5)]\n"
MASK_HEADS = (', roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)), '
              'test_cfg=dict(rcnn=dict(score_thr=0.0))')


@dataclass(frozen=True)
class Job:
    """One whole model: its config, the data it trains on and the metric tools/test.py gives."""
    name: str
    config: str
    data: str  # 'coco', 'ade' or 'imagenet'
    metric: str
    by_epoch: bool


JOBS = [
    Job('retinanet', 'mmdet/retinanet_poolformer_s12_1x.py', 'coco', 'coco/bbox_mAP', True),
    Job('mask_rcnn', 'mmdet/mask_rcnn_poolformer_s12_1x.py', 'coco', 'coco/segm_mAP', True),
    Job('semantic_fpn', 'mmseg/fpn_poolformer_s12_40k_ade20k.py', 'ade', 'mIoU', False),
    Job('upernet', 'mmseg/upernet_caformer_s18_160k_ade20k.py', 'ade', 'mIoU', False),
    Job('classifier', 'mmpretrain/poolformer_s12_in1k.py', 'imagenet', 'accuracy/top1', True),
]


@pytest.fixture(scope='module')
def data(module_tmp_factory) -> dict:
    from mmmetaformer.testing import make_ade20k_like, make_coco_shapes, make_imagenet_folders
    per_epoch = ITERATIONS // EPOCHS
    return {
        'coco': make_coco_shapes(str(module_tmp_factory.mktemp('coco')), splits=(('train', 2 * per_epoch),
                                                                                 ('val', 8))),
        'ade': make_ade20k_like(str(module_tmp_factory.mktemp('ade')), splits=(('training', 8), ('validation', 4))),
        'imagenet': make_imagenet_folders(str(module_tmp_factory.mktemp('imagenet')),
                                          splits=(('train', 4 * per_epoch // 3), ('val', 2))),
    }


def job_config(job: Job, root: str, folder, epochs: int = EPOCHS, iterations: int = ITERATIONS) -> str:
    """``job``'s config on the generated data at ``root``, for ``epochs`` (or ``iterations``), logging every
    iteration, a checkpoint at the end, a short warm-up."""
    if job.data == 'coco':
        mask = job.name == 'mask_rcnn'
        body = DET_TINY.format(root=root, model_extra=MASK_HEADS if mask else RETINA_HEAD, mask=mask, epochs=epochs)
    elif job.data == 'ade':
        body = SEG_TINY.format(root=root, **tiny_ade_pipelines()) + (
            f'train_cfg = dict(max_iters={iterations}, val_interval={iterations})\n'
            f'default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iterations}))\n')
    else:
        body = (f"data_root = '{root}'\nmodel = dict(backbone=dict(init_cfg=None))\n"
                'train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, '
                'dataset=dict(data_root=data_root))\n'
                'val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, '
                'dataset=dict(data_root=data_root))\ntest_dataloader = val_dataloader\n'
                f'train_cfg = dict(max_epochs={epochs}, val_interval={epochs})\n'
                'default_hooks = dict(logger=dict(interval=1))\n')
    body += SHORT_WARMUP + 'randomness = dict(seed=0)\n'
    return write_config(folder / f'{job.name}_{epochs}_{iterations}.py', job.config, body)


def losses_of(output: str) -> List[float]:
    """The total loss of every logged training iteration, in order."""
    return [float(value) for value in re.findall(r'\(train\).*? loss: ([-\d.e+naif]+)', output)]


def first_iteration_loss(cfg, device: str) -> float:
    """The total loss of ``cfg``'s model on its first training batch, in fp32 on ``device``, without the random
    parts of training (eval mode: no drop path or dropout; the detectors' samplers seeded alike)."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner, set_random_seed

    import mmmetaformer  # noqa: F401  (registers the mmmetaformer scope)
    init_default_scope(cfg.default_scope)
    set_random_seed(0)  # the weights, the augmentations and the batch augments alike on both devices
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))  # as mmengine's Runner does
    model = MODELS.build(model_cfg)
    model.init_weights()
    model = model.to(device).eval()
    loader = Runner.build_dataloader(dict(cfg.train_dataloader, sampler=dict(type='DefaultSampler', shuffle=False)))
    set_random_seed(0)
    batch = next(iter(loader))
    set_random_seed(0)
    with torch.no_grad():
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    return total.item()


def test_mmcv_ops_of_the_install_agree_with_the_cpu(capsys):
    """The check tools/install.sh ends with on a GPU machine (``cuda_build.py check-gpu``): mmcv's nms and RoIAlign
    on the GPU against the CPU."""
    from mmmetaformer.utils.cuda_build import main
    assert main(['check-gpu']) == 0
    assert 'agree with the CPU' in capsys.readouterr().out


@pytest.mark.parametrize('job', JOBS, ids=[job.name for job in JOBS])
def test_first_iteration_loss_matches_the_cpu(job, data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    cfg = load_cfg(job_config(job, data[job.data], tmp_path))
    if job.name == 'mask_rcnn':  # proposals sampled on the CPU alike for both devices
        from mmdet.models.task_modules.samplers import RandomSampler

        def choose(self, gallery, num):
            values = torch.as_tensor(gallery)
            order = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:num]
            chosen = values[order.to(values.device)]
            return chosen if torch.is_tensor(gallery) else chosen.cpu().numpy()
        monkeypatch.setattr(RandomSampler, 'random_choice', choose)
    on_cpu, on_gpu = first_iteration_loss(cfg, 'cpu'), first_iteration_loss(cfg, 'cuda')
    assert math.isfinite(on_gpu)
    assert abs(on_gpu - on_cpu) <= FIRST_LOSS_TOLERANCE * abs(on_cpu), (on_cpu, on_gpu)


@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('job', JOBS, ids=[job.name for job in JOBS])
def test_trains_resumes_and_tests_on_the_gpu(job, precision, data, tmp_path):
    config = job_config(job, data[job.data], tmp_path)
    work = tmp_path / 'work'
    output = run_tool(['tools/train.py', config, '--work-dir', str(work), *PRECISIONS[precision]]).stdout
    losses = losses_of(output)
    assert len(losses) == ITERATIONS, output[-3000:]
    assert all(map(math.isfinite, losses)), losses
    assert sum(losses[-6:]) < sum(losses[:6]), f'{precision} losses did not go down: {losses}'
    if precision == 'fp16':
        assert 'AmpOptimWrapper' in output
    checkpoint = work / (f'epoch_{EPOCHS}.pth' if job.by_epoch else f'iter_{ITERATIONS}.pth')
    assert checkpoint.exists(), sorted(p.name for p in work.iterdir())

    if precision == 'fp16':  # one more epoch (or RESUMED iterations) from that checkpoint
        longer = job_config(job, data[job.data], tmp_path, epochs=EPOCHS + 1, iterations=ITERATIONS + RESUMED)
        output = run_tool(['tools/train.py', longer, '--work-dir', str(work), '--resume', *PRECISIONS[precision]]
                          ).stdout
        assert re.search(rf'resumed epoch: \d+, iter: {ITERATIONS}\b', output), output[-3000:]
        resumed = losses_of(output)
        assert len(resumed) == RESUMED and all(map(math.isfinite, resumed)), resumed
        checkpoint = work / (f'epoch_{EPOCHS + 1}.pth' if job.by_epoch else f'iter_{ITERATIONS + RESUMED}.pth')
        assert checkpoint.exists()

    result = run_tool(['tools/test.py', config, str(checkpoint), '--work-dir', str(work)])
    assert 0.0 <= logged_metric(result, job.metric) <= (100.0 if job.data != 'coco' else 1.0)
