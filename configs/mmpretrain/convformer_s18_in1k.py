_base_ = './_base_/convformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.ConvFormer', arch='s18', drop_path_rate=0.2),
    head=dict(in_channels=512))
