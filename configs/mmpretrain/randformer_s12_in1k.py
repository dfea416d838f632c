_base_ = './_base_/metaformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.RandFormer', arch='s12', drop_path_rate=0.1),
    head=dict(in_channels=512))
