_base_ = './_base_/mask_rcnn_metaformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.PoolFormerV2',
        arch='s12',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/poolformerv2/poolformerv2_s12.pth')))
