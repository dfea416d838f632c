_base_ = './_base_/finetune_384.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.CAFormer',
        arch='s18',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth')),
    head=dict(in_channels=512, mlp_head=True))
