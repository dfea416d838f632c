# UperNet 160k schedule, after mmseg's ConvNeXt UperNet recipe: AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05, linear
# warmup over 1500 iterations from 1e-6 of the lr, then poly (power 1.0) to 0 at 160k; layer-wise lr decay over the
# MetaFormer backbone (mmmetaformer/optim.py; the per-model configs set the rate), no weight decay on norms, scales
# and biases. Published on 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr for other batches.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmmetaformer.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
