# Both papers: AdamW lr 4e-3 at a total batch of 4096 (32 GPUs x 128; lr = 1e-3 x batch / 1024, applied by
# `tools/train.py --auto-scale-lr`), weight decay 0.05 except on 1-D parameters (norms, scales, biases, StarReLU),
# 300 epochs, linear warmup from 1e-6, cosine to 1e-5. Families override the warmup (20 epochs for ConvFormer and
# CAFormer) and the optimizer (LAMB 8e-3 for CAFormer).
base_lr = 4e-3
warmup_epochs = 5
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / base_lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=300,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=4096)
