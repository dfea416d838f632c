_base_ = './_base_/retinanet_metaformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.PoolFormer',
        arch='s24',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s24.pth.tar')))
