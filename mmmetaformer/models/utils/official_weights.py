"""The official sail-sg weights of each family, by name (``init_cfg=dict(type='Pretrained', checkpoint='in21k')``)."""
from ...errors import InvalidSettingError

# name -> file suffix.
# Every family has ImageNet-1K weights; ConvFormer and CAFormer also have 384-pixel fine-tunes, ImageNet-21K
# pre-training (21841-class head) and 21K pre-training fine-tuned on 1K (official metaformer_baselines.py).
NAMED_WEIGHTS = {'in1k': '', 'in1k_384': '_384', 'in21k': '_in21k', 'in21ft1k': '_in21ft1k',
                 'in21ft1k_384': '_384_in21ft1k'}
# The sizes of which official weights were published, per family.
_V1_ARCHS = ('s12', 's24', 's36', 'm36', 'm48')
_BASELINE_ARCHS = ('s18', 's36', 'm36', 'b36')
OFFICIAL_ARCHS = {'poolformer': _V1_ARCHS, 'poolformerv2': _V1_ARCHS, 'identityformer': _V1_ARCHS,
                  'randformer': _V1_ARCHS, 'convformer': _BASELINE_ARCHS, 'caformer': _BASELINE_ARCHS}
_ALL_WEIGHTS = ('convformer', 'caformer')


def official_weights_url(family: str, arch: str, weights: str = 'in1k') -> str:
    """The URL of the official ``weights`` (a name of :data:`NAMED_WEIGHTS`) of ``family`` (lower case, e.g.
    ``'caformer'``) at size ``arch`` (e.g. ``'s18'``); a clear error for weights that were never published."""
    if weights not in NAMED_WEIGHTS:
        raise InvalidSettingError(f'unknown official weights {weights!r}; the names are {", ".join(NAMED_WEIGHTS)}')
    if family not in OFFICIAL_ARCHS:
        raise InvalidSettingError(f'no official weights for {family!r}: named weights exist for the published families '
                                  f'{", ".join(OFFICIAL_ARCHS)} (give a checkpoint path or URL instead)')
    if arch not in OFFICIAL_ARCHS[family]:
        raise InvalidSettingError(f'{family} has no arch {arch!r}; official weights exist for '
                                  f'{", ".join(OFFICIAL_ARCHS[family])}')
    if weights != 'in1k' and family not in _ALL_WEIGHTS:
        raise InvalidSettingError(
            f'{family}_{arch} has official ImageNet-1K weights only (\'in1k\'); {weights!r} weights '
            f'were published for {" and ".join(_ALL_WEIGHTS)}')
    if family == 'poolformer':
        return f'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_{arch}.pth.tar'
    return f'https://huggingface.co/sail/dl/resolve/main/{family}/{family}_{arch}{NAMED_WEIGHTS[weights]}.pth'
