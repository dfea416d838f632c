# PoolFormer-M36/M48: evaluation crop_pct 0.95 (the S sizes use 0.9).
_base_ = './poolformer_in1k.py'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=235, edge='short', backend='pillow', interpolation='bicubic'),  # 224 / 0.95
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
