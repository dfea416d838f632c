"""Sphinx configuration of the mmmetaformer documentation (Markdown through myst-parser, API pages by autodoc).

Built strictly, warnings and unresolved references being errors::

    python -m sphinx -W -n --keep-going -b html docs/en docs/en/_build/html

(``tests/test_docs.py`` runs this build.)
"""
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not another installed copy

import mmmetaformer  # noqa: E402

project = 'mmmetaformer'
author = 'mmmetaformer contributors'
copyright = 'mmmetaformer contributors'  # noqa: A001
release = mmmetaformer.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

html_theme = 'furo'
html_title = f'mmmetaformer {release}'

# Google-style docstrings (Args:, Returns:, Example:) as mmpretrain writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'  # signatures stay plain; types are named in the docstrings' Args
napoleon_preprocess_types = True  # 'int, optional' in Args: 'optional' is a word, not a type

# No network while building (no intersphinx): these third-party names have no inventory to resolve against, so the
# strict build (-n) ignores references to them. Everything of mmmetaformer must resolve.
nitpick_ignore_regex = [
    (r'py:.*', r'(torch|mmengine|mmcv|mmdet|mmseg|mmpretrain|timm|onnx|onnxruntime|numpy|np|nn|argparse)(\..*)?'),
    (r'py:.*', r'(Tensor|Module|Dropout|BatchNorm|Config|ConfigDict|Runner|Hook|Optimizer|OptimWrapper|BaseModel)'),
    (r'py:.*', r'DataSample'),
]


def _import_path(path: str):
    """The object at dotted ``path`` (a module, or attributes below the longest importable module), or None."""
    parts = path.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return None
        return target
    return None


def _resolve_own_reference(app, env, node, contnode):
    """Resolve a reference of mmmetaformer's docstrings that names an object as Python would find it but not by the
    name it is documented under: a short name from the referring module's namespace (``PoolFormer`` inside
    ``mmmetaformer.models.backbones.metaformer``) or a re-export (``mmmetaformer.PoolFormer``, which is
    ``mmmetaformer.models.backbones.PoolFormer``). It links to the documented entry of the same object; an existing
    object of the package without an entry of its own (a private helper) is shown as code without a link. A name
    that does not exist stays unresolved, so the strict build fails on it.
    """
    if node.get('refdomain') != 'py':
        return None
    target = node['reftarget'].lstrip('~.')
    module = node.get('py:module') or ''
    domain = env.get_domain('py')
    from sphinx.util.nodes import make_refnode

    def link(name):
        entry = domain.objects[name]
        return make_refnode(app.builder, node['refdoc'], entry.docname, entry.node_id, contnode, name)

    for path in [f'{module}.{target}'] * bool(module) + [target]:
        obj = _import_path(path) if path.startswith('mmmetaformer') else None
        if obj is None or not str(getattr(obj, '__module__', None) or 'mmmetaformer').startswith('mmmetaformer'):
            continue
        last = target.rsplit('.', 1)[-1]
        for name, entry in domain.objects.items():
            if name.rsplit('.', 1)[-1] == last and not entry.aliased and _import_path(name) is obj:
                return link(name)
        return contnode  # exists, has no entry of its own: plain code
    if '.' not in target:  # a short name of a documented object that the referring module does not import
        matches = [name for name, entry in domain.objects.items()
                   if name.rsplit('.', 1)[-1] == target and not entry.aliased]
        if len(matches) == 1:
            return link(matches[0])
    return None


def setup(app):
    app.connect('missing-reference', _resolve_own_reference)
