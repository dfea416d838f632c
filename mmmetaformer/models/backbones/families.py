"""The six published families by name, and which of their published sizes a checkpoint's backbone is."""
from typing import List, Tuple

import torch

from ..utils.checkpoint_layouts import BACKBONE, StateDict
from .caformer import CAFormer
from .convformer import ConvFormer
from .identityformer import IdentityFormer
from .poolformer import PoolFormer
from .poolformerv2 import PoolFormerV2
from .randformer import RandFormer

# The published families by their lower-case names (as in 'caformer_s18').
FAMILIES = {cls.__name__.lower(): cls for cls in (PoolFormer, PoolFormerV2, IdentityFormer, RandFormer, ConvFormer,
                                                 CAFormer)}


def identify_arch(canonical: StateDict) -> List[Tuple[str, str]]:
    """Every published (family, arch) whose backbone has exactly the tensor names and shapes of the
    ``backbone.*`` part of a canonical state dict (see :func:`mmmetaformer.models.utils.to_canonical`).

    Parameter-free mixers make families indistinguishable by their tensors: PoolFormerV2 and IdentityFormer of
    the same size both match.
    """
    found = {k[len(BACKBONE):]: tuple(v.shape) for k, v in canonical.items()
             if k.startswith(BACKBONE) and not k.startswith(BACKBONE + 'out_norms.')}
    matches = []
    for family in FAMILIES.values():
        for arch in family.arch_settings:
            with torch.device('meta'):
                model = family(arch=arch, norm_outputs=False)
            if {k: tuple(v.shape) for k, v in model.state_dict().items()} == found:
                matches.append((family.__name__, arch))
    return matches
