# PoolFormer v1: GroupNorm on the full last map before pooling, Linear head; evaluation crop_pct 0.9
# (s12, s24, s36; m36 and m48 use 0.95, see poolformer_m_in1k.py).
_base_ = './metaformer_in1k.py'

model = dict(backbone=dict(type='mmmetaformer.PoolFormer'), head=dict(norm_before_pool=True))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),  # 224 / 0.9
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
