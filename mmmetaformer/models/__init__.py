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
from .backbones.metaformer import MetaFormer
from .layers import (
                     Attention,
                     ChannelLayerNorm,
                     IdentityMixer,
                     ModifiedLayerNorm,
                     Pooling,
                     RandomMixing,
                     SepConv,
                     SquaredReLU,
                     StarReLU,
)

__all__ = [
    'FAMILIES', 'MetaFormer', 'PoolFormer', 'PoolFormerV2', 'IdentityFormer', 'RandFormer', 'ConvFormer', 'CAFormer',
    'IdentityMixer', 'Pooling', 'RandomMixing', 'SepConv', 'Attention', 'ChannelLayerNorm', 'ModifiedLayerNorm',
    'StarReLU', 'SquaredReLU', 'identify_arch'
]
