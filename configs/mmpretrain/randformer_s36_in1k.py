_base_ = './_base_/metaformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.RandFormer', arch='s36', drop_path_rate=0.2),
    head=dict(in_channels=512))
