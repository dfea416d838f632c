_base_ = './_base_/upernet_metaformer_160k_ade20k.py'

model = dict(
    backbone=dict(
        type='mmmetaformer.ConvFormer',
        arch='s36',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/sail/dl/resolve/main/convformer/convformer_s36.pth')),
)
# 36 blocks: the stem trains at 0.975 ** 37 = 0.39 of the lr (S18: 0.95 ** 19 = 0.38)
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.975))
