_base_ = './_base_/fpn_metaformer_40k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.PoolFormer',
        arch='m36',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_m36.pth.tar')),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
