_base_ = './_base_/convformer_finetune_384.py'

# The official 224 model, backbone and classifier.
checkpoint = 'https://huggingface.co/sail/dl/resolve/main/convformer/convformer_m36.pth'
model = dict(
    backbone=dict(type='mmmetaformer.ConvFormer', arch='m36', drop_path_rate=0.8,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    head=dict(in_channels=576, head_dropout=0.5, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
