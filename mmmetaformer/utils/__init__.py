"""Helpers below the models (they import nothing from models/, engine/, apis/ or export/): the stack check, the
packaged files, the command-line tools' helpers, complexity measurement, the model index, silenced output streams.

Only the stack check and the packaged files are imported by ``import mmmetaformer``; import the other submodules
where used.
"""
