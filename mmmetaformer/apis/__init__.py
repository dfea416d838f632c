"""High-level entry points: inference on images and videos (:mod:`.inference`), the registration of our
classifiers with mmpretrain's model hub (:mod:`.model_hub`) and the side-by-side speed comparison with other
implementations (:mod:`.benchmark`).

The submodules are imported where used: :mod:`.inference` and :mod:`.benchmark` import mmcv, the task libraries
or timm, which ``import mmmetaformer`` does not need.
"""
