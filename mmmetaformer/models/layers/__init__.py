"""The parts of a MetaFormer block: norms, activations, scales and MLPs (``blocks``), the registered token mixers
(``token_mixers``), and the device-, dtype- and compiler-specific fast paths behind one switch (the module
``fast_paths``, whose context manager is ``use_fast_paths``)."""
from .blocks import (
                     ChannelLayerNorm,
                     ChannelLinear,
                     DepthwiseConv2d,
                     DropPath,
                     Mlp,
                     MlpHead,
                     ModifiedLayerNorm,
                     Scale,
                     SquaredReLU,
                     StarReLU,
                     build_norm,
)
from .fast_paths import scaled_residual
from .token_mixers import Attention, IdentityMixer, Pooling, RandomMixing, SepConv

__all__ = ['Attention', 'ChannelLayerNorm', 'ChannelLinear', 'DepthwiseConv2d', 'DropPath', 'IdentityMixer', 'Mlp',
           'MlpHead', 'ModifiedLayerNorm', 'Pooling', 'RandomMixing', 'Scale', 'SepConv', 'SquaredReLU', 'StarReLU',
           'build_norm', 'scaled_residual']
