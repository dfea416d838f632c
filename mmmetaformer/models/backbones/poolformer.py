"""PoolFormer (v1, CVPR 2022): pooling mixer, MLN (GroupNorm) with bias, conv-free GELU MLP with bias, layer scale."""
from ...registry import MODELS
from .arch_tables import POOLFORMER_DEPTHS, POOLFORMER_DIMS
from .metaformer import MetaFormer


def _poolformer_arch(name: str, layer_scale: float) -> dict:
    return dict(
        depths=POOLFORMER_DEPTHS[name],
        dims=POOLFORMER_DIMS[name],
        token_mixers=dict(type='Pooling', pool_size=3),
        norm_cfg=dict(type='ModifiedLayerNorm', bias=True, eps=1e-5),
        mlp_cfg=dict(act_cfg=dict(type='GELU'), bias=True),
        stem_norm_cfg=None,
        downsample_norm_cfg=None,
        layer_scale_init_values=layer_scale,
        res_scale_init_values=None)


@MODELS.register_module()
class PoolFormer(MetaFormer):
    """PoolFormer v1 ("MetaFormer Is Actually What You Need for Vision"). ``arch``: s12, s24, s36, m36, m48."""
    arch_settings = {
        's12': _poolformer_arch('s12', 1e-5),
        's24': _poolformer_arch('s24', 1e-5),
        's36': _poolformer_arch('s36', 1e-6),
        'm36': _poolformer_arch('m36', 1e-6),
        'm48': _poolformer_arch('m48', 1e-6),
    }
