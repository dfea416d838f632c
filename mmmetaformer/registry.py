"""MMEngine registries of mmmetaformer (scope ``mmmetaformer``): models (backbones, token mixers, norms,
activations), optimizer wrappers and their constructors, model wrappers, runners and hooks."""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmmetaformer', locations=['mmmetaformer.models'])


def build_module(cfg: dict, **kwargs):
    """Build ``cfg`` (plus ``kwargs``) from this registry, whatever the running library's default scope is.

    MMEngine resolves a type in the registry of the current default scope (e.g. mmdet's), where our mixers, norms
    and activations are not; scoping the build here keeps them found while a scoped type such as
    ``'mmdet.Foo'`` still works.
    """
    cfg = dict(cfg, **kwargs)
    cfg.setdefault('_scope_', MODELS.scope)
    return MODELS.build(cfg)


OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmmetaformer',
                          locations=['mmmetaformer.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mmmetaformer', locations=['mmmetaformer.optim'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='mmmetaformer',
                          locations=['mmmetaformer.engine'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope='mmmetaformer', locations=['mmmetaformer.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmmetaformer', locations=['mmmetaformer.preemption'])
