"""IdentityFormer ("MetaFormer Baselines for Vision"): identity mixer everywhere (a lower bound of MetaFormer)."""
from ...registry import MODELS
from .arch_tables import archs_at_poolformer_sizes
from .metaformer import MetaFormer


@MODELS.register_module()
class IdentityFormer(MetaFormer):
    """IdentityFormer backbone. ``arch``: s12, s24, s36, m36, m48 (or an arch dict)."""
    arch_settings = archs_at_poolformer_sizes(dict(type='IdentityMixer'))
