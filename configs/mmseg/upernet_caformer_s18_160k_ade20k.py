_base_ = './_base_/upernet_metaformer_160k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.CAFormer',
        arch='s18',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth')),
)
