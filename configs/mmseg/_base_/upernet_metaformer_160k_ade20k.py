# UperNet (160k, ADE20K) with a MetaFormer backbone, the MetaFormer-Baselines setup: mmseg's UperNet (decode head
# 512 channels, pool scales 1/2/3/6; auxiliary FCN head on stage 3, 256 channels, loss weight 0.4), a fresh output
# norm on every stage, 512x512 crops, 8 GPUs x 2 images. Per-model configs set the backbone type, arch, drop path,
# layer decay and weights, and for M36/B36 the head input widths. See configs/mmseg/README.md.
_base_ = ['./ade20k.py', './schedule_160k_adamw.py', './default_runtime.py']

crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
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
        type='mmmetaformer.ConvFormer',
        arch='s18',
        out_indices=(0, 1, 2, 3),
        norm_outputs=True,
        drop_path_rate=0.3,
        frozen_stages=-1),
    decode_head=dict(
        type='UPerHead',
        in_channels=[64, 128, 320, 512],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=320,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=2)
