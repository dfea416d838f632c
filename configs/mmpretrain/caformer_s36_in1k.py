_base_ = './_base_/caformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.CAFormer', arch='s36', drop_path_rate=0.3),
    head=dict(in_channels=512, head_dropout=0.4))
