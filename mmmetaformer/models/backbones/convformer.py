"""ConvFormer ("MetaFormer Baselines for Vision"): separable-convolution mixer everywhere."""
from ...registry import MODELS
from ..metaformer import MetaFormer
from .arch_tables import conv_zoo


@MODELS.register_module()
class ConvFormer(MetaFormer):
    """ConvFormer backbone. ``arch``: s18, s36, m36, b36 (or an arch dict)."""
    arch_zoo = conv_zoo(dict(type='SepConv'))
