_base_ = './_base_/caformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.CAFormer', arch='s18', drop_path_rate=0.15),
    head=dict(in_channels=512))
