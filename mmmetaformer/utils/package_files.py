"""The configs, tools and model index that come with the package, wherever it is installed.

A wheel carries them inside the package as ``mmmetaformer/.mim/{configs,tools,model-index.yml}`` (the OpenMMLab
``.mim`` convention, written by setup.py's ``build_py``); a checkout or an editable install (``pip install -e .``)
uses the repository's own files.
"""
import difflib
from pathlib import Path

from ..errors import MissingFileError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # mmmetaformer/


def package_root() -> Path:
    """The folder holding ``configs/``, ``tools/`` and ``model-index.yml``: the packaged ``.mim`` copy, or the
    repository root of a checkout."""
    for root in (PACKAGE_DIR / '.mim', PACKAGE_DIR.parent):
        if (root / 'model-index.yml').is_file() and (root / 'configs').is_dir():
            return root
    raise MissingFileError(f'mmmetaformer at {PACKAGE_DIR} carries no configs: neither {PACKAGE_DIR / ".mim"} '
                           f'(a wheel) nor {PACKAGE_DIR.parent / "configs"} (a checkout) exists. Reinstall it '
                           f'from a wheel built with `pip wheel .` or from a checkout with `pip install -e .`.')


def model_index_file() -> Path:
    """The root ``model-index.yml``, which imports the metafiles of every task."""
    return package_root() / 'model-index.yml'


def config_file(name: str) -> str:
    """The path of one of our configs, by its name relative to ``configs/``, e.g.
    ``config_file('mmdet/retinanet_poolformer_s12_1x.py')``. An unknown name is an error naming close matches."""
    configs = package_root() / 'configs'
    path = (configs / name).resolve()
    if path.suffix == '.py' and path.is_file() and configs.resolve() in path.parents:
        return str(path)
    known = sorted(p.relative_to(configs).as_posix() for p in configs.rglob('*.py') if '__pycache__' not in p.parts)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f'close matches: {", ".join(close)}' if close else f'e.g. {known[0]}' if known else 'no configs found'
    raise MissingFileError(f'no config {name!r} in {configs} (names are relative to configs/ and end in .py; '
                           f'{hint})')
