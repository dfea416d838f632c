"""MetaFormer backbones (PoolFormer, PoolFormerV2, IdentityFormer, RandFormer, ConvFormer, CAFormer) for
mmdet, mmseg and mmpretrain."""
from .utils.stack import check_stack
from .version import __version__

check_stack()

from .apis.model_hub import register_when_mmpretrain_loads  # noqa: E402
from .models import *  # noqa: E402,F401,F403  (registers everything in the ``mmmetaformer`` scope)
from .models import __all__ as _models_all  # noqa: E402
from .registry import MODELS  # noqa: E402
from .utils.package_files import config_file  # noqa: E402

register_when_mmpretrain_loads()  # our classifiers by name in mmpretrain.list_models() / get_model()

__all__ = ['__version__', 'MODELS', 'config_file'] + _models_all
