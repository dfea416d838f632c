_base_ = './_base_/convformer_finetune_384.py'

# The official 224 model, backbone and classifier.
checkpoint = 'https://huggingface.co/sail/dl/resolve/main/convformer/convformer_s18.pth'
model = dict(
    backbone=dict(type='mmmetaformer.ConvFormer', arch='s18', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    head=dict(in_channels=512, head_dropout=0.4, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
