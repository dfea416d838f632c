"""Arch settings shared by the families: published depths and widths, and the v2 (MetaFormer baselines) design."""
from typing import Sequence, Union

# The sizes of the PoolFormer paper (s12 to m48), which PoolFormerV2, IdentityFormer and RandFormer share.
POOLFORMER_DEPTHS = {'s12': (2, 2, 6, 2), 's24': (4, 4, 12, 4), 's36': (6, 6, 18, 6), 'm36': (6, 6, 18, 6),
                     'm48': (8, 8, 24, 8)}
POOLFORMER_DIMS = {'s12': (64, 128, 320, 512), 's24': (64, 128, 320, 512), 's36': (64, 128, 320, 512),
                   'm36': (96, 192, 384, 768), 'm48': (96, 192, 384, 768)}
# The sizes of the ConvFormer paper (s18 to b36), which CAFormer shares.
CONVFORMER_DEPTHS = {'s18': (3, 3, 9, 3), 's36': (3, 12, 18, 3), 'm36': (3, 12, 18, 3), 'b36': (3, 12, 18, 3)}
CONVFORMER_DIMS = {'s18': (64, 128, 320, 512), 's36': (64, 128, 320, 512), 'm36': (96, 192, 384, 576),
                   'b36': (128, 256, 512, 768)}

MLN_NO_BIAS = dict(type='ModifiedLayerNorm', bias=False, eps=1e-6)
LN_NO_BIAS = dict(type='ChannelLayerNorm', bias=False, eps=1e-6)


def baseline_arch(depths: Sequence[int], dims: Sequence[int], token_mixers: Union[dict, Sequence[dict]],
                  norm_cfg: dict) -> dict:
    """Arch dict of a v2-family model: LN stem and pre-norm downsampling, StarReLU MLP without bias,
    res scale in stages 3 and 4, no layer scale."""
    return dict(
        depths=depths,
        dims=dims,
        token_mixers=token_mixers,
        norm_cfg=norm_cfg,
        mlp_cfg=dict(act_cfg=dict(type='StarReLU', inplace=True), bias=False),
        stem_norm_cfg=LN_NO_BIAS,
        downsample_norm_cfg=LN_NO_BIAS,
        layer_scale_init_values=None,
        res_scale_init_values=(None, None, 1.0, 1.0))


def archs_at_poolformer_sizes(token_mixers: Union[dict, Sequence[dict]]) -> dict:
    """The arch settings by size name (s12, s24, s36, m36, m48) of IdentityFormer, RandFormer and PoolFormerV2 (MLN
    without bias)."""
    return {name: baseline_arch(POOLFORMER_DEPTHS[name], POOLFORMER_DIMS[name], token_mixers, MLN_NO_BIAS)
            for name in POOLFORMER_DEPTHS}


def archs_at_convformer_sizes(token_mixers: Union[dict, Sequence[dict]]) -> dict:
    """The arch settings by size name (s18, s36, m36, b36) of ConvFormer and CAFormer (channel LayerNorm without
    bias)."""
    return {name: baseline_arch(CONVFORMER_DEPTHS[name], CONVFORMER_DIMS[name], token_mixers, LN_NO_BIAS)
            for name in CONVFORMER_DEPTHS}
