_base_ = './_base_/caformer_finetune_384.py'

# The official 224 model, backbone and classifier.
checkpoint = 'https://huggingface.co/sail/dl/resolve/main/caformer/caformer_b36.pth'
model = dict(
    backbone=dict(type='mmmetaformer.CAFormer', arch='b36', drop_path_rate=0.8,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    head=dict(in_channels=768, head_dropout=0.5, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
