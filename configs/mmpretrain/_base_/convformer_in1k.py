# ConvFormer: MlpHead (no head dropout at any size), 20 warmup epochs.
_base_ = './metaformer_in1k.py'

model = dict(backbone=dict(type='mmmetaformer.ConvFormer', arch='s18'), head=dict(mlp_head=True))
warmup_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 4e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=300,
         convert_to_iter_based=True)
]
