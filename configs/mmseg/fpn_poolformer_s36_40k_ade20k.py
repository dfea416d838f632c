_base_ = './_base_/fpn_metaformer_40k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.PoolFormer',
        arch='s36',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s36.pth.tar')),
)
