# Semantic FPN (40k, ADE20K) with a MetaFormer backbone, as in the PoolFormer paper. Per-model configs set the
# backbone type/arch/weights and, for the M sizes, the FPN input widths.
_base_ = ['./ade20k.py', './schedule_40k_adamw.py', './default_runtime.py']

crop_size = (512, 512)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='mmmetaformer.PoolFormer',
        arch='s12',
        out_indices=(0, 1, 2, 3),
        norm_outputs=True,
        drop_path_rate=0.0,
        frozen_stages=-1),
    neck=dict(type='FPN', in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
