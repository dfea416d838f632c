_base_ = './_base_/retinanet_metaformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.CAFormer',
        arch='s18',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth')))
