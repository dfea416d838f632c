# CAFormer at 384: LAMB lr 1e-4.
_base_ = './finetune_384.py'

model = dict(backbone=dict(type='mmmetaformer.CAFormer', arch='s18'))
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Lamb', lr=1e-4, weight_decay=0.05))
