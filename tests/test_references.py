"""Every reference in the repository's text resolves: the repository paths, the sections named in words or by anchors,
and the ``mmmetaformer.`` import paths named in the docs, docstrings, comments, configs, error messages and ``--help``
texts. The text is read from the source files (no imports, no subprocesses): a module path resolves to a file of the
package, an attribute to a name defined or imported at the top level of its module (or in a class body there), and
``mmmetaformer.Name`` may also be a registry name (a class registered with ``register_module``)."""
import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import ROOT

ROOT_PATH = Path(ROOT)
SKIPPED_DIRS = {'.git', '.venv', '_build', 'work_dirs', 'data', '__pycache__', '.pytest_cache', '.ruff_cache'}
TEXT_SUFFIXES = {'.py', '.md', '.rst', '.sh', '.yml', '.toml', '.cfg', '.txt'}
TOP_FOLDERS = ('mmmetaformer', 'tools', 'configs', 'tests', 'docs')
# paths that exist only elsewhere than in a checkout: the configs inside an installed wheel, the built site
ELSEWHERE = ('mmmetaformer/.mim', 'docs/en/_build')
PATH = re.compile(r'(?<![\w./-])((?:%s)/[\w.{},/<>*-]*[\w}>*])' % '|'.join(TOP_FOLDERS))
PLACEHOLDER = re.compile(r'[<*]|\.\.\.|/[A-Z][A-Z_]+\b')
IMPORT_PATH = re.compile(r'(?<![\w./-])mmmetaformer(?:\.[A-Za-z_]\w*)+')
SECTION = re.compile(r'(README(?:\.md)?|(?:docs|configs)/[\w/.-]+\.md)(?:\'s)?,? "([^"\n]+)"')
MD_LINK = re.compile(r'\]\(([^)\s]+\.md)?#([^)\s]+)\)')


def text_files() -> List[Path]:
    found = []
    for path in sorted(ROOT_PATH.rglob('*')):
        relative = path.relative_to(ROOT_PATH)
        if set(relative.parts) & SKIPPED_DIRS or not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        if relative.parts[0] in TOP_FOLDERS or len(relative.parts) == 1:
            found.append(path)
    return found


FILES = [path for path in text_files() if path != Path(__file__).resolve()]  # not the patterns' own examples


def expand_braces(text: str) -> List[str]:
    """``a/{b,c}_{d,e}.py`` -> the four paths, as the shell expands it."""
    match = re.search(r'\{([^{}]*)\}', text)
    if not match:
        return [text]
    return [expanded for choice in match.group(1).split(',')
            for expanded in expand_braces(text[:match.start()] + choice + text[match.end():])]


def occurrences(pattern: re.Pattern) -> Iterator[Tuple[str, int, re.Match]]:
    for path in FILES:
        for number, line in enumerate(path.read_text(errors='replace').splitlines(), 1):
            for match in pattern.finditer(line):
                yield f'{path.relative_to(ROOT_PATH)}:{number}', number, match


def test_repository_paths_exist():
    missing = []
    for where, _, match in occurrences(PATH):
        named = match.group(1).rstrip('.')
        if PLACEHOLDER.search(named) or named.startswith(ELSEWHERE) or where.startswith('tests/'):
            continue
        missing += [f'{where}: {path}' for path in expand_braces(named) if not (ROOT_PATH / path).exists()]
    assert not missing, '\n'.join(missing)


def slug(heading: str) -> str:
    """The anchor myst-parser (and GitHub) gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
    return text.replace(' ', '-')


@lru_cache(maxsize=None)
def headings(path: Path) -> Tuple[str, ...]:
    text = re.sub(r'^```.*?^```', '', path.read_text(), flags=re.S | re.M)
    return tuple(line.lstrip('#').strip() for line in text.splitlines() if re.match(r'#{1,6} ', line))


def test_sections_named_in_words_exist():
    missing = []
    for where, _, match in occurrences(SECTION):
        document = ROOT_PATH / ('README.md' if match.group(1).startswith('README') else match.group(1))
        if not document.is_file() or match.group(2) not in headings(document):
            missing.append(f'{where}: {match.group(1)}, "{match.group(2)}"')
    assert not missing, '\n'.join(missing)


def test_section_anchors_of_markdown_links_exist():
    missing = []
    for path in FILES:
        if path.suffix != '.md':
            continue
        text = re.sub(r'^```.*?^```', '', path.read_text(), flags=re.S | re.M)
        for target, anchor in MD_LINK.findall(text):
            document = (path.parent / target) if target else path
            if not document.is_file() or anchor not in {slug(heading) for heading in headings(document.resolve())}:
                missing.append(f'{path.relative_to(ROOT_PATH)}: {target}#{anchor}')
    assert not missing, '\n'.join(missing)


# --- import paths, resolved from the source ------------------------------------------------------------------------

PACKAGE = ROOT_PATH / 'mmmetaformer'


def module_file(parts: Tuple[str, ...]) -> Optional[Path]:
    base = PACKAGE.parent.joinpath(*parts)
    for candidate in (base.with_suffix('.py'), base / '__init__.py'):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def top_level_names(body: List[ast.stmt], module: Tuple[str, ...]) -> Dict[str, object]:
    """Name -> its definition (a class node, a function node, ('import', module parts, name)) or True."""
    names: Dict[str, object] = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = True
        elif isinstance(node, ast.ImportFrom):
            source = module[:len(module) - node.level + 1] if node.level else ()
            source += tuple(node.module.split('.')) if node.module else ()
            for alias in node.names:
                key = f'*{len(names)}' if alias.name == '*' else alias.asname or alias.name
                names[key] = ('import', source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split('.')[0]] = True
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(top_level_names(node.body, module))
    return names


def package_of(path: Path) -> Tuple[str, ...]:
    """The dotted parts of the package a file's relative imports start from."""
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return parts[:-1] if parts[-1] == '__init__' else parts[:-1]


def attribute_exists(module: Tuple[str, ...], attributes: Tuple[str, ...], depth: int = 0) -> bool:
    if not attributes:
        return True
    path = module_file(module)
    if path is None or depth > 8:
        return False
    if module_file(module + attributes[:1]) is not None:  # a submodule
        return attribute_exists(module + attributes[:1], attributes[1:], depth + 1)
    if re.fullmatch(r'__\w+__', attributes[0]):  # __file__, __version__, ... (and whatever follows)
        return True
    names = top_level_names(parsed(path).body, package_of(path))
    found = names.get(attributes[0])
    if found is None:  # maybe through a star import of one of ours
        return any(key.startswith('*') and value[1][:1] == ('mmmetaformer',) and
                   attribute_exists(value[1], attributes, depth + 1) for key, value in names.items())
    if isinstance(found, tuple):  # imported: follow it, if it is ours
        _, source, name = found
        if not source or source[0] != 'mmmetaformer':
            return True
        return attribute_exists(source, (name,) + attributes[1:], depth + 1)
    if isinstance(found, ast.ClassDef) and len(attributes) > 1:
        members = top_level_names(found.body, package_of(path))
        return attributes[1] in members or any(
            isinstance(node, ast.FunctionDef) and node.name == '__init__' and f'self.{attributes[1]}' in
            ast.unparse(node) for node in found.body)
    return len(attributes) == 1 or found is True


@lru_cache(maxsize=None)
def registered_names() -> Set[str]:
    """Classes registered in a registry of the package (``@X.register_module()``): ``mmmetaformer.Name`` in configs."""
    names = set()
    for path in PACKAGE.rglob('*.py'):
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.ClassDef) and any('register_module' in ast.unparse(d) for d in node.decorator_list):
                names.add(node.name)
    return names


def resolves(dotted: str) -> bool:
    parts = tuple(dotted.split('.'))
    if len(parts) == 2 and parts[1] in registered_names():
        return True
    return attribute_exists(parts[:1], parts[1:])


def test_import_paths_resolve():
    unresolved = sorted({f'{where}: {match.group(0)}' for where, _, match in occurrences(IMPORT_PATH)
                         if not resolves(match.group(0))})
    assert not unresolved, '\n'.join(unresolved)


@pytest.mark.parametrize('dotted, expected', [
    ('mmmetaformer.models.backbones.FAMILIES', True), ('mmmetaformer.CAFormer', True),
    ('mmmetaformer.PoolFormer.arch_settings', True), ('mmmetaformer.errors.UserError', True),
    ('mmmetaformer.engine.hooks.checkpoint_to_continue', True), ('mmmetaformer.engine.nothing_here', False),
    ('mmmetaformer.no_module', False), ('mmmetaformer.models.backbones.families.stage_tables', False)])
def test_the_resolver_itself(dotted, expected):
    assert resolves(dotted) is expected


def test_the_path_and_section_patterns_themselves():
    assert expand_braces('configs/mmdet/{a,b}_{c,d}.py') == ['configs/mmdet/a_c.py', 'configs/mmdet/a_d.py',
                                                            'configs/mmdet/b_c.py', 'configs/mmdet/b_d.py']
    assert PATH.findall('see mmmetaformer/engine.py, and (tools/test.py).') == ['mmmetaformer/engine.py',
                                                                               'tools/test.py']
    assert SECTION.search('(see README.md, "Data")').groups() == ('README.md', 'Data')
    assert slug('Train, test, resume') == 'train-test-resume'
    assert slug('Models by name (mmpretrain)') == 'models-by-name-mmpretrain'
