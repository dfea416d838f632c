# UperNet 160k schedule (the loops and hooks of the 40k one), after mmseg's ConvNeXt UperNet recipe: AdamW lr 1e-4,
# betas (0.9, 0.999), wd 0.05, linear warmup over 1500 iterations from 1e-6 of the lr, then poly (power 1.0) to 0 at
# 160k; layer-wise lr decay over the MetaFormer backbone (mmmetaformer/engine/optimizers/; the per-model configs set
# the rate for 36 blocks), no weight decay on norms, scales and biases. Evaluation and checkpoints every 16k.
# Published on 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr for other batch sizes.
_base_ = './schedule_40k_adamw.py'

optim_wrapper = dict(
    optimizer=dict(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmmetaformer.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(max_iters=160000, val_interval=16000)
default_hooks = dict(checkpoint=dict(interval=16000))
auto_scale_lr = dict(base_batch_size=16)
