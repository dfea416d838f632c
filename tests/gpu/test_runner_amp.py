"""An mmengine ``Runner`` training a MetaFormer backbone plus a small head on a GPU with ``AmpOptimWrapper`` (the
wrapper ``tools/train.py --amp`` sets) and the layer-decay constructor, a checkpoint, and a resume from it."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

import mmmetaformer  # noqa: F401  (registers the mmmetaformer scope)
from mmmetaformer.models import ConvFormer

ITERS = 6


class RandomImages(Dataset):
    """Fixed random 64x64 images with one of 4 labels."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 64, 64, generator=generator), label=index % 4)


class TinyClassifier(BaseModel):
    """A ConvFormer-S18 backbone (``model.backbone``, as the layer-decay constructor expects) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ConvFormer(arch='s18', out_indices=(3, ))
        self.head = nn.Linear(512, 4)

    def forward(self, inputs, label=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        logits = self.head(self.backbone(inputs.to(self.head.weight.device))[0].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits.float(), label.to(logits.device)))
        return logits


def runner_config(work_dir: str, dtype: str, resume: bool) -> dict:
    return dict(
        model=TinyClassifier(),
        work_dir=work_dir,
        train_dataloader=dict(dataset=RandomImages(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=8, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(type='AmpOptimWrapper', dtype=dtype, optimizer=dict(type='AdamW', lr=1e-4),
                           constructor='mmmetaformer.LayerDecayOptimizerConstructor',
                           paramwise_cfg=dict(decay_rate=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=ITERS if resume else ITERS // 2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=ITERS // 2),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmmetaformer',
    )


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_runner_trains_with_amp_checkpoints_and_resumes(tmp_path, dtype):
    from mmmetaformer.engine import CrashSafeRunner
    work_dir = str(tmp_path)
    first = CrashSafeRunner(**runner_config(work_dir, dtype, resume=False))
    first.train()
    assert first.iter == ITERS // 2
    assert glob.glob(osp.join(work_dir, f'iter_{ITERS // 2}.pth'))
    scale = first.optim_wrapper.loss_scaler.get_scale() if dtype == 'float16' else None

    second = CrashSafeRunner(**runner_config(work_dir, dtype, resume=True))
    second.train()
    assert second.iter == ITERS
    model = second.model
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).is_cuda
    if scale is not None:  # the scaler's state came back with the checkpoint
        assert second.optim_wrapper.loss_scaler.get_scale() >= scale / 2**(ITERS // 2)
    assert osp.isfile(osp.join(work_dir, f'iter_{ITERS}.pth'))
