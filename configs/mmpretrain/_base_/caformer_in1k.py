# CAFormer: MlpHead, LAMB lr 8e-3 at batch 4096, 20 warmup epochs.
_base_ = './metaformer_in1k.py'

model = dict(backbone=dict(type='mmmetaformer.CAFormer', arch='s18'), head=dict(mlp_head=True))
base_lr = 8e-3
warmup_epochs = 20
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Lamb', lr=base_lr, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / base_lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=300,
         convert_to_iter_based=True)
]
