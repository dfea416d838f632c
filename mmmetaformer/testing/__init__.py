"""Generated demo data sets for tests, the demo and the docs."""
from .demo_data import make_ade20k_like, make_coco_shapes, make_imagenet_folders

__all__ = ['make_ade20k_like', 'make_coco_shapes', 'make_imagenet_folders']
