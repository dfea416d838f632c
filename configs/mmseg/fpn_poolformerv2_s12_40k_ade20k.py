_base_ = './_base_/fpn_metaformer_40k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.PoolFormerV2',
        arch='s12',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/poolformerv2/poolformerv2_s12.pth')),
)
