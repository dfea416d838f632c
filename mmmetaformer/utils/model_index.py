"""The model zoo metadata: ``model-index.yml``, the metafiles it imports, and the README tables and the
documentation's generated pages (``docs/en/model_zoo.md``, ``docs/en/stage_widths.md``) made from them.

Layout and rules (one entry per config, names and paths, README tables) are checked by :func:`check_model_index`
and by ``tools/model_zoo.py --check``; the tests also build every entry's config and compare its parameters.
"""
import os
import re
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from ..errors import InvalidSettingError, MissingFileError
from .package_files import package_root

TABLE_BEGIN, TABLE_END = '<!-- model-zoo:begin -->', '<!-- model-zoo:end -->'
UNLISTED = ('_base_', 'demo')  # config folders without model entries
DOCS = Path('docs') / 'en'  # absent from an installed package
ZOO_PAGE, STAGE_PAGE = 'model_zoo.md', 'stage_widths.md'  # the generated pages of DOCS


def read_yaml(path: Path) -> dict:
    with open(path) as file:
        return yaml.safe_load(file)


def metafiles(root: Optional[Path] = None) -> Dict[str, dict]:
    """The metafiles imported by ``model-index.yml``, by their path relative to ``root``, parsed."""
    root = root or package_root()
    imports = read_yaml(root / 'model-index.yml')['Import']
    missing = [path for path in imports if not (root / path).is_file()]
    if missing:
        raise MissingFileError(f'model-index.yml imports missing metafiles: {missing}')
    return {path: read_yaml(root / path) for path in imports}


def models(root: Optional[Path] = None) -> List[dict]:
    """Every model entry of the model index."""
    return [model for metafile in metafiles(root).values() for model in metafile['Models']]


def check_model_index(root: Optional[Path] = None) -> List[str]:
    """What is wrong with the model index against the configs (empty when nothing): metafiles it does not import,
    configs of a task with a metafile without exactly one entry there, entries without a config or with a name
    other than the config's, unknown collections, results without their source."""
    root = root or package_root()
    imported = metafiles(root)
    problems = [f'{path} is not imported by model-index.yml'
                for path in sorted(p.relative_to(root).as_posix() for p in (root / 'configs').glob('*/metafile.yml'))
                if path not in imported]
    entries = {}
    for path, metafile in imported.items():
        task_dir = Path(path).parent
        collections = {collection['Name'] for collection in metafile.get('Collections', [])}
        for model in metafile['Models']:
            config = model.get('Config', '')
            if Path(config).parent != task_dir:
                problems.append(f'{path}: {model["Name"]}: config {config!r} is not in {task_dir}/')
            if not (root / config).is_file():
                problems.append(f'{path}: {model["Name"]}: config {config!r} does not exist')
            if model['Name'] != Path(config).stem:
                problems.append(f'{path}: name {model["Name"]!r} differs from its config name {Path(config).stem!r}')
            if model.get('In Collection') not in collections:
                problems.append(f'{path}: {model["Name"]}: unknown collection {model.get("In Collection")!r}')
            if ('Results' in model) != ('Results Source' in model):
                problems.append(f'{path}: {model["Name"]}: Results and Results Source go together')
            entries.setdefault(config, []).append(path)
        configs = [p.relative_to(root).as_posix() for p in (root / task_dir).rglob('*.py')
                   if not set(p.relative_to(root / task_dir).parts) & set(UNLISTED)]
        problems += [f'{path}: config {config} has {len(entries.get(config, []))} entries, not 1'
                     for config in sorted(configs) if len(entries.get(config, [])) != 1]
    return problems


def _metrics(model: dict) -> Dict[str, float]:
    return {name: value for result in model.get('Results', []) for name, value in result['Metrics'].items()}


def render_table(metafile: dict, readme_dir: Optional[Path], root: Path) -> str:
    """The markdown table of a metafile's models, with config links relative to the README's folder (configs
    are relative to ``root``), or with ``readme_dir=None`` the configs' paths as code (the documentation site, which
    does not hold the configs)."""
    metric_names = list(dict.fromkeys(name for model in metafile['Models'] for name in _metrics(model)))
    header = ['config', 'Params (M)', 'FLOPs (G)'] + metric_names + ['weights', 'source of the results']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for model in metafile['Models']:
        metrics, source = _metrics(model), model.get('Results Source')
        if readme_dir is None:
            name = f'`{model["Config"]}`'
        else:
            name = f'[{model["Name"]}]({os.path.relpath(root / model["Config"], readme_dir)})'
        row = [name, f'{model["Metadata"]["Parameters"] / 1e6:.2f}',
               f'{model["Metadata"]["FLOPs"] / 1e9:.2f}']
        row += [str(metrics[name]) if name in metrics else '-' for name in metric_names]
        row += [f'[download]({model["Weights"]})' if model.get('Weights') else '-',
                f'[{source["Title"]}]({source["URL"]})' if source else '-']
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


ZOO_PAGE_INTRO = """The configs of the three libraries with their sizes, the published results and, where they were
published, the official weights. Generated by `python tools/model_zoo.py` from `model-index.yml` and the metafiles
it imports; `python tools/model_zoo.py --check` fails when this page differs from them. Each section repeats the
notes of its folder's README (what the columns mean, where the numbers and weights come from)."""


def _relink(markdown: str, source_dir: Path, target_dir: Path) -> str:
    """``markdown`` written in ``source_dir`` with its relative links made relative to ``target_dir``."""
    def relink(match: re.Match) -> str:
        link, _, anchor = match.group(1).partition('#')
        if not link or re.match(r'[a-z]+:', link):
            return match.group(0)
        moved = Path(os.path.relpath(source_dir / link, target_dir)).as_posix()
        return '](' + moved + ('#' + anchor if anchor else '') + ')'
    return re.sub(r'\]\(([^)\s]+)\)', relink, markdown)


def render_zoo_page(root: Optional[Path] = None) -> str:
    """The documentation's model zoo page: per metafile, its README's title and notes and its table."""
    root = root or package_root()
    parts = ['# Model zoo', '', ZOO_PAGE_INTRO]
    for path, metafile in metafiles(root).items():
        readme = ((root / path).parent / 'README.md').read_text()
        title, _, rest = readme.partition('\n')
        notes = _relink(rest.split(TABLE_BEGIN)[0].strip(), (root / path).parent, root / DOCS)
        parts += ['', '#' + title.strip(), '', f'Configs under `{Path(path).parent.as_posix()}/`, metafile `{path}`.',
                  '', notes, '', render_table(metafile, None, root)]
    return '\n'.join(parts) + '\n'


def update_readmes(root: Optional[Path] = None, check: bool = False,
                   pages: Optional[Dict[str, str]] = None) -> List[str]:
    """Write the table of every imported metafile into the README beside it, between ``TABLE_BEGIN`` and
    ``TABLE_END``, and, where the checkout has the docs, their generated pages: the model zoo
    (:func:`render_zoo_page`) and ``pages`` (file name under the docs -> text; ``tools/model_zoo.py`` gives the stage
    widths, :func:`~mmmetaformer.models.backbones.families.stage_table_page`, which this level cannot build); with
    ``check``, change nothing and return the files that differ from what they are generated from."""
    root = root or package_root()
    outdated = []
    for path, metafile in metafiles(root).items():
        readme = (root / path).parent / 'README.md'
        text = readme.read_text() if readme.is_file() else ''
        pattern = re.compile(re.escape(TABLE_BEGIN) + r'\n.*?' + re.escape(TABLE_END), re.S)
        if not pattern.search(text):
            raise InvalidSettingError(
                f'{readme} has no table markers: add the lines {TABLE_BEGIN} and {TABLE_END} where '
                f'the table of {path} goes')
        table = f'{TABLE_BEGIN}\n{render_table(metafile, readme.parent, root)}\n{TABLE_END}'
        updated = pattern.sub(lambda _: table, text)
        if updated != text:
            outdated.append(str(readme.relative_to(root)))
            if not check:
                readme.write_text(updated)
    if (root / DOCS).is_dir():
        for name, text in {ZOO_PAGE: render_zoo_page(root), **(pages or {})}.items():
            page = root / DOCS / name
            if not page.is_file() or page.read_text() != text:
                outdated.append((DOCS / name).as_posix())
                if not check:
                    page.write_text(text)
    return outdated
