_base_ = './_base_/convformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.ConvFormer', arch='m36', drop_path_rate=0.4),
    head=dict(in_channels=576))
