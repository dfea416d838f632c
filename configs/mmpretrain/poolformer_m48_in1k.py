_base_ = './_base_/poolformer_in1k.py'

model = dict(
    backbone=dict(type='mmmetaformer.PoolFormer', arch='m48', drop_path_rate=0.4),
    head=dict(in_channels=768))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=235, edge='short', backend='pillow', interpolation='bicubic'),  # 224 / 0.95
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
