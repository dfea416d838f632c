_base_ = './_base_/convformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.ConvFormer', arch='b36', drop_path_rate=0.6),
    head=dict(in_channels=768))
