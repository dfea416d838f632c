"""ConvFormer ("MetaFormer Baselines for Vision"): separable-convolution mixer everywhere."""
from ...registry import MODELS
from .arch_tables import archs_at_convformer_sizes
from .metaformer import MetaFormer


@MODELS.register_module()
class ConvFormer(MetaFormer):
    """ConvFormer backbone. ``arch``: s18, s36, m36, b36 (or an arch dict)."""
    arch_settings = archs_at_convformer_sizes(dict(type='SepConv'))
