"""IdentityFormer ("MetaFormer Baselines for Vision"): identity mixer everywhere (a lower bound of MetaFormer)."""
from ...registry import MODELS
from ..metaformer import MetaFormer
from .arch_tables import small_zoo


@MODELS.register_module()
class IdentityFormer(MetaFormer):
    """IdentityFormer backbone. ``arch``: s12, s24, s36, m36, m48 (or an arch dict)."""
    arch_zoo = small_zoo(dict(type='IdentityMixer'))
