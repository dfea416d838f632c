_base_ = './_base_/finetune_384.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.CAFormer',
        arch='b36',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/caformer/caformer_b36.pth')),
    head=dict(in_channels=768, head_dropout=0.5, mlp_head=True))
