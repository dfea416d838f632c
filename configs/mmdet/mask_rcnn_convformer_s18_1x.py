_base_ = './_base_/mask_rcnn_metaformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.ConvFormer',
        arch='s18',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/convformer/convformer_s18.pth')))
