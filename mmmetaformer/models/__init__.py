from .backbones import (
                        FAMILIES,
                        CAFormer,
                        ConvFormer,
                        IdentityFormer,
                        PoolFormer,
                        PoolFormerV2,
                        RandFormer,
                        identify_arch,
)
from .layers import ChannelLayerNorm, ModifiedLayerNorm, SquaredReLU, StarReLU
from .metaformer import MetaFormer
from .token_mixers import Attention, IdentityMixer, Pooling, RandomMixing, SepConv

__all__ = [
    'FAMILIES', 'MetaFormer', 'PoolFormer', 'PoolFormerV2', 'IdentityFormer', 'RandFormer', 'ConvFormer', 'CAFormer',
    'IdentityMixer', 'Pooling', 'RandomMixing', 'SepConv', 'Attention', 'ChannelLayerNorm', 'ModifiedLayerNorm',
    'StarReLU', 'SquaredReLU', 'identify_arch'
]
