"""Our classifiers by their config names in mmpretrain: ``mmpretrain.list_models()``, ``mmpretrain.get_model(name,
pretrained=...)`` and ``ImageClassificationInferencer(name)``.

``import mmmetaformer`` registers ``configs/mmpretrain/metafile.yml`` with mmpretrain's
``ModelHub.register_model_index`` as soon as the hub exists: at once if mmpretrain is already imported, otherwise
right after mmpretrain's hub module is first imported. Importing mmpretrain only for this would add about 0.8 s
(a fifth) to ``import mmmetaformer``, which needs only torch and mmengine, and load mmpretrain into every mmdet and
mmseg run.

The official weights named in the metafile download through mmengine as any URL does; a failed download is the
error of :func:`mmmetaformer.models.utils.read_checkpoint` (what to download and how to use the local copy). Their
official key layouts are converted when they are loaded into the classifier (``MetaFormerClassifier``).
"""
import importlib.abc
import importlib.util
import sys
import threading
from typing import Callable, List

import yaml

from ..utils.package_files import package_root

HUB_MODULE = 'mmpretrain.apis.model'
_registered = False
_reading = threading.local()


def classifier_metafile() -> str:
    """The metafile of our ImageNet classifiers (the mmpretrain configs)."""
    return str(package_root() / 'configs' / 'mmpretrain' / 'metafile.yml')


def official_weights() -> List[str]:
    """The weight URLs of the classifier metafile."""
    with open(classifier_metafile()) as file:
        models = yaml.safe_load(file)['Models']
    return sorted({model['Weights'] for model in models if model.get('Weights')})


def load_from_official_weights(filename: str, map_location=None) -> dict:
    """mmengine checkpoint loader (logged as the ``official_weights`` backend) of the metafile's URLs, the official
    ImageNet-1K classifiers: reads them through ``read_checkpoint``, so that a failed download says what to do
    instead (``get_model(name, pretrained=True)`` offline), and names the ImageNet classes for the inferencers."""
    from mmengine.runner.checkpoint import load_from_http
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    from ..models.utils import read_checkpoint
    if getattr(_reading, 'active', False):  # read_checkpoint's own download of the same URL comes back here
        return load_from_http(filename, map_location=map_location)
    _reading.active = True
    try:
        state_dict = read_checkpoint(filename)
    finally:
        _reading.active = False
    return dict(state_dict=state_dict, meta=dict(dataset_meta=dict(classes=IMAGENET_CATEGORIES)))


def register_classifiers() -> None:
    """Register our classifiers with mmpretrain's ModelHub (once) and the download hint of their weights."""
    global _registered
    if _registered:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmpretrain.apis.model import ModelHub
    ModelHub.register_model_index(classifier_metafile(), config_prefix=str(package_root()))
    CheckpointLoader.register_scheme(prefixes=official_weights(), loader=load_from_official_weights, force=True)
    _registered = True


class _RunAfterImport(importlib.abc.MetaPathFinder):
    """Import hook: runs ``callback`` right after module ``name`` has been executed for the first time."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot; lets the regular finders locate the module below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_callback(module) -> None:
            exec_module(module)
            self.callback()

        spec.loader.exec_module = exec_then_callback
        return spec


def register_when_mmpretrain_loads() -> None:
    """Register our classifiers now if mmpretrain's hub is imported, else as soon as it is."""
    if sys.modules.get(HUB_MODULE) is not None:  # None: an import blocked on purpose
        register_classifiers()
    elif not any(isinstance(finder, _RunAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RunAfterImport(HUB_MODULE, register_classifiers))
