# RandFormer's random mixing is made for 224 input; at 512 crops it uses resampled matrices.
_base_ = './_base_/fpn_metaformer_40k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.RandFormer',
        arch='s12',
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/randformer/randformer_s12.pth')),
)
