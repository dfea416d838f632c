"""Former home of the checkpoint helpers, kept so that existing imports work; they live in
:mod:`mmmetaformer.models.utils`."""
from .models.utils import *  # noqa: F401,F403
from .models.utils import __all__  # noqa: F401
