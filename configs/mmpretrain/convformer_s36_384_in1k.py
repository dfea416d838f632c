_base_ = './_base_/finetune_384.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.ConvFormer',
        arch='s36',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/convformer/convformer_s36.pth')),
    head=dict(in_channels=512, head_dropout=0.4, mlp_head=True))
