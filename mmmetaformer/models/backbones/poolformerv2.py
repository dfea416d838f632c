"""PoolFormerV2 ("MetaFormer Baselines for Vision"): pooling mixer with the v2 block design."""
from ...registry import MODELS
from .arch_tables import archs_at_poolformer_sizes
from .metaformer import MetaFormer


@MODELS.register_module()
class PoolFormerV2(MetaFormer):
    """PoolFormerV2 backbone. ``arch``: s12, s24, s36, m36, m48 (or an arch dict)."""
    arch_settings = archs_at_poolformer_sizes(dict(type='Pooling', pool_size=3))
