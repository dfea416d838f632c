from .caformer import CAFormer
from .convformer import ConvFormer
from .families import FAMILIES, identify_arch
from .identityformer import IdentityFormer
from .metaformer import MetaFormer
from .poolformer import PoolFormer
from .poolformerv2 import PoolFormerV2
from .randformer import RandFormer

__all__ = ['FAMILIES', 'CAFormer', 'ConvFormer', 'IdentityFormer', 'MetaFormer', 'PoolFormer', 'PoolFormerV2',
           'RandFormer', 'identify_arch']
