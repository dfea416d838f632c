"""Former home of the mmpretrain classifier and head, kept so that configs importing it still load; they live in
:mod:`mmmetaformer.models.classifiers`."""
from ..models.classifiers import MetaFormerClassifier, MetaFormerClsHead

__all__ = ['MetaFormerClassifier', 'MetaFormerClsHead']
