"""RandFormer ("MetaFormer Baselines for Vision"): identity mixers, then frozen random mixing in stages 3 and 4."""
from ...registry import MODELS
from .arch_tables import archs_at_poolformer_sizes
from .metaformer import MetaFormer


@MODELS.register_module()
class RandFormer(MetaFormer):
    """RandFormer backbone. ``arch``: s12, s24, s36, m36, m48 (or an arch dict).

    The random matrices are made for a 224x224 input (14x14 tokens in stage 3, 7x7 in stage 4); other input sizes
    use resampled matrices (see :class:`RandomMixing`).
    """
    arch_settings = archs_at_poolformer_sizes([dict(type='IdentityMixer'), dict(type='IdentityMixer'),
                                               dict(type='RandomMixing', num_tokens=196),
                                               dict(type='RandomMixing', num_tokens=49)])
