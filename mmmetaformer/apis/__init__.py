"""High-level entry points: inference on images and videos (:mod:`.inference`) and the registration of our
classifiers with mmpretrain's model hub (:mod:`.model_hub`).

The submodules are imported where used: :mod:`.inference` imports mmcv and the task libraries, which
``import mmmetaformer`` does not need.
"""
