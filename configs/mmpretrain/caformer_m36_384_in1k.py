_base_ = './_base_/finetune_384.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.CAFormer',
        arch='m36',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/caformer/caformer_m36.pth')),
    head=dict(in_channels=576, head_dropout=0.4, mlp_head=True))
