"""MMEngine registry of mmmetaformer: backbones, token mixers, norms and activations (scope ``mmmetaformer``)."""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmmetaformer', locations=['mmmetaformer.models'])
