"""MetaFormer backbones (PoolFormer, PoolFormerV2, IdentityFormer, RandFormer, ConvFormer, CAFormer) for
mmdet, mmseg and mmpretrain."""
from .compat import check_stack
from .version import __version__

check_stack()

from .models import *  # noqa: E402,F401,F403  (registers everything in the ``mmmetaformer`` scope)
from .models import __all__ as _models_all  # noqa: E402
from .registry import MODELS  # noqa: E402

__all__ = ['__version__', 'MODELS'] + _models_all
