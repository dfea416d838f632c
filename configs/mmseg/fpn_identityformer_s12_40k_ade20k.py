_base_ = './_base_/fpn_metaformer_40k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.IdentityFormer',
        arch='s12',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/identityformer/identityformer_s12.pth')),
)
