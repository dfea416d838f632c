_base_ = './_base_/poolformer_m_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.PoolFormer', arch='m36', drop_path_rate=0.3),
    head=dict(in_channels=768))
