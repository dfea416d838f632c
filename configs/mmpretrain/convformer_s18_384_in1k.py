_base_ = './_base_/finetune_384.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.ConvFormer',
        arch='s18',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/convformer/convformer_s18.pth')),
    head=dict(in_channels=512, mlp_head=True))
