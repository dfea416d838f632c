# ImageNet-1K classifier: a MetaFormer backbone returning its last stage without output norm, and the official
# head (MetaFormerClsHead), in MetaFormerClassifier (mmpretrain's ImageClassifier that also loads the official
# checkpoint layouts). Label smoothing 0.1, mixup 0.8, cutmix 1.0.
_base_ = ['./imagenet_224.py', './schedule_300e.py', './default_runtime.py']

model = dict(
    type='mmmetaformer.MetaFormerClassifier',
    backbone=dict(type='mmmetaformer.PoolFormerV2', arch='s12', out_indices=(3, ), norm_outputs=False,
                  drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='mmmetaformer.MetaFormerClsHead',
        num_classes=1000,
        in_channels=512,
        norm_before_pool=False,
        mlp_head=False,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
