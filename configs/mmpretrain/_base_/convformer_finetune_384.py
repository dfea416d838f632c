# ConvFormer at 384: AdamW lr 5e-5.
_base_ = './finetune_384.py'

model = dict(backbone=dict(type='mmmetaformer.ConvFormer', arch='s18'))
