"""Helpers below the models: the stack check, the packaged files, the command-line tools' helpers, complexity and
speed measurement, the model index.

Only the stack check and the packaged files are imported by ``import mmmetaformer``; import the other submodules
where used.
"""
