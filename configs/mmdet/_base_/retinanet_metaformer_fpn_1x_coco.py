# RetinaNet 1x with a MetaFormer backbone, as in the PoolFormer paper. Per-model configs set the backbone
# type/arch/weights (and the FPN widths where they differ).
_base_ = ['./coco_detection.py', './schedule_1x_adamw.py', './default_runtime.py']

model = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='mmmetaformer.PoolFormer',
        arch='s12',
        # RetinaNet uses strides 8-32 only: the stride-4 stage gets no output (and no output norm), so every
        # parameter receives a gradient and DDP needs no find_unused_parameters.
        out_indices=(1, 2, 3),
        norm_outputs=True,
        drop_path_rate=0.0,
        frozen_stages=-1),
    neck=dict(
        type='FPN',
        # The paper's FPN(in=[64, 128, 320, 512], start_level=1) without the unused stride-4 input: the same
        # modules and outputs.
        in_channels=[128, 320, 512],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
