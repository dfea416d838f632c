from .caformer import CAFormer
from .convformer import ConvFormer
from .identityformer import IdentityFormer
from .layers import ChannelLayerNorm, ModifiedLayerNorm, SquaredReLU, StarReLU
from .metaformer import MetaFormer
from .poolformer import PoolFormer
from .poolformerv2 import PoolFormerV2
from .randformer import RandFormer
from .token_mixers import Attention, IdentityMixer, Pooling, RandomMixing, SepConv
from .zoo import FAMILIES, identify_arch

__all__ = [
    'FAMILIES', 'MetaFormer', 'PoolFormer', 'PoolFormerV2', 'IdentityFormer', 'RandFormer', 'ConvFormer', 'CAFormer',
    'IdentityMixer', 'Pooling', 'RandomMixing', 'SepConv', 'Attention', 'ChannelLayerNorm', 'ModifiedLayerNorm',
    'StarReLU', 'SquaredReLU'
]
