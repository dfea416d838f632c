"""CAFormer ("MetaFormer Baselines for Vision"): separable convolutions in stages 1-2, attention in stages 3-4."""
from ...registry import MODELS
from .arch_tables import archs_at_convformer_sizes
from .metaformer import MetaFormer


@MODELS.register_module()
class CAFormer(MetaFormer):
    """CAFormer backbone. ``arch``: s18, s36, m36, b36 (or an arch dict)."""
    arch_settings = archs_at_convformer_sizes([dict(type='SepConv'), dict(type='SepConv'),
                                               dict(type='Attention', head_dim=32),
                                               dict(type='Attention', head_dim=32)])
