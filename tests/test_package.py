"""The package as a whole: its import graph (no cycle, the models import nothing above them, utils/ nothing of the
models or above, no engine module the tools' helpers), the former module paths gone from the package and every file,
``import mmmetaformer`` in a fresh interpreter, the registry names the configs use, and the import paths README.md
documents and the private torch names in use."""
import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from conftest import ROOT

PACKAGE = Path(ROOT) / 'mmmetaformer'
# Modules that import nothing of mmmetaformer, which every layer may use (the OpenMMLab registry convention).
LEAF_MODULES = {'mmmetaformer.registry', 'mmmetaformer.errors', 'mmmetaformer.version'}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the mmmetaformer modules it imports, at module level or inside functions."""
    modules = {module_name(path): path for path in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        package = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                anchor = package[:len(package) - node.level + 1] if node.level else []
                target = '.'.join(anchor + ([node.module] if node.module else []))
                # ``from package import submodule`` imports the submodule
                imported |= {f'{target}.{alias.name}' if f'{target}.{alias.name}' in modules else target
                             for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every cycle a depth-first walk meets, each as the list of its modules."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = 'open'
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 'open':
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_models_import_nothing_above_them():
    above = {module: sorted(imported - LEAF_MODULES)
             for module, imported in import_graph().items() if module.startswith('mmmetaformer.models')}
    assert {module: imported for module, imported in above.items()
            if any(not name.startswith('mmmetaformer.models') for name in imported)} == {}


def reachable(graph: Dict[str, Set[str]], module: str) -> Set[str]:
    """The modules that importing ``module`` imports, directly or through others."""
    found, waiting = set(), [module]
    while waiting:
        for imported in graph[waiting.pop()] - found:
            found.add(imported)
            waiting.append(imported)
    return found


def is_above_utils(name: str) -> bool:
    """The models, what builds on them, and the top-level package (whose names are the models')."""
    return name == 'mmmetaformer' or name.startswith(
        ('mmmetaformer.models', 'mmmetaformer.engine', 'mmmetaformer.apis', 'mmmetaformer.export'))


def test_utils_import_nothing_of_the_models_or_above():
    graph = import_graph()
    assert {module: sorted(filter(is_above_utils, imported))
            for module, imported in graph.items()
            if module.startswith('mmmetaformer.utils') and any(map(is_above_utils, imported))} == {}


def test_the_import_rules_see_names_of_the_top_level_package_and_indirect_imports():
    graph = {'hook': {'helper'}, 'helper': {'cli'}, 'cli': set()}
    assert reachable(graph, 'hook') == {'helper', 'cli'}
    assert is_above_utils('mmmetaformer') and is_above_utils('mmmetaformer.models.backbones')
    assert not is_above_utils('mmmetaformer.utils.stack') and not is_above_utils('mmmetaformer.errors')


def test_no_engine_module_imports_the_tools_helpers():
    """Neither directly nor through another module."""
    graph = import_graph()
    assert [module for module in graph
            if module.startswith('mmmetaformer.engine') and 'mmmetaformer.utils.cli' in reachable(graph, module)] == []


# Private torch names the package and its tools use, each where it is used; the reason is recorded beside the use,
# and a test pins the behaviour relied on (named in that comment).
PRIVATE_TORCH_NAMES = {
    'torch.utils._python_dispatch': {'mmmetaformer/export/exporter.py'},
    'torch.nn.modules.batchnorm._BatchNorm': {'mmmetaformer/models/backbones/metaformer.py'},
    'torch.ops.aten.convolution_backward': {'mmmetaformer/models/layers/fast_paths.py'},
    '._version': {'mmmetaformer/models/layers/token_mixers.py'},
    'torch._dynamo': {'mmmetaformer/models/backbones/metaformer.py'},
}
# Private attributes of torch's tensors and modules (no torch prefix to find them by).
PRIVATE_TORCH_ATTRIBUTES = r'_version|_cdata|_grad_fn|_compiled_call_impl|_conv_forward|_parameters|_buffers|' \
    r'_modules|_forward_hooks|_forward_pre_hooks|_backward_hooks|_global_\w+'


def private_torch_names(text: str) -> List[str]:
    """The private torch names in Python source: dotted names under ``torch``, names imported from a torch module,
    operators called through ``torch.ops``, and private attributes of tensors and modules."""
    names = re.findall(r'\btorch(?:\.\w+)*\._(?!_)\w+', text)  # not dunder names (__version__)
    names += re.findall(r'\btorch\.ops\.\w+\.\w+', text)
    for module, imported in re.findall(r'^\s*from (torch[\w.]*) import \(?([\w, ]+)', text, re.M):
        names += [f'{module}.{name.strip()}' for name in imported.split(',') if name.strip().startswith('_')]
    names += [f'.{name}' for name in re.findall(rf'\.({PRIVATE_TORCH_ATTRIBUTES})\b', text)]
    return names


def test_the_private_name_search_finds_each_kind():
    source = """from torch.nn.modules.batchnorm import _BatchNorm, BatchNorm2d
import torch.utils._pytree
y = torch.ops.aten.convolution_backward(g)
n = x._version + len(module._forward_hooks) + len(nn.modules.module._global_forward_hooks)
s = torch.__version__
"""
    assert sorted(private_torch_names(source)) == sorted([
        'torch.nn.modules.batchnorm._BatchNorm', 'torch.utils._pytree', 'torch.ops.aten.convolution_backward',
        '._version', '._forward_hooks', '._global_forward_hooks'])


def test_private_torch_names_are_only_the_recorded_ones():
    used: Dict[str, Set[str]] = {}
    for folder in ('mmmetaformer', 'tools'):
        for path in (Path(ROOT) / folder).rglob('*.py'):
            for name in private_torch_names(path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert used == PRIVATE_TORCH_NAMES


# The former top-level homes of apis/inference.py, models/utils/ and models/classifiers.py (never written out here,
# so that this file does not name them itself).
FORMER_MODULES = ['inference', 'checkpoint', 'integrations']
TEXT_SUFFIXES = {'.py', '.md', '.rst', '.txt', '.yml', '.yaml', '.sh', '.toml', '.cfg', '.ini'}


def test_the_former_module_paths_are_gone():
    """No module of that name in the package's folder (searched there only: an editable install of another checkout
    adds a finder of its own files)."""
    from importlib.machinery import PathFinder
    assert [name for name in FORMER_MODULES
            if PathFinder.find_spec(f'mmmetaformer.{name}', [str(PACKAGE)]) is not None] == []


def test_no_file_names_a_former_module_path():
    """Neither as an import path nor as a file path: not in the package, its tools, tests, docs and configs, nor in
    the top-level files."""
    root = Path(ROOT)
    files = [path for path in root.iterdir() if path.suffix in TEXT_SUFFIXES]
    for folder in ('mmmetaformer', 'tools', 'tests', 'docs', 'configs', '.ci'):
        files += [path for path in (root / folder).rglob('*') if path.suffix in TEXT_SUFFIXES
                  and '_build' not in path.parts and '__pycache__' not in path.parts]
    pattern = re.compile(rf'\bmmmetaformer[./](?:{"|".join(FORMER_MODULES)})\b')
    assert len(files) > 100
    assert {str(path.relative_to(root)): pattern.findall(path.read_text(errors='replace'))
            for path in files if pattern.search(path.read_text(errors='replace'))} == {}


def test_leaf_modules_import_nothing_of_the_package():
    graph = import_graph()
    assert {module: graph[module] for module in LEAF_MODULES if graph[module]} == {}


def test_import_in_a_fresh_interpreter_loads_each_module_once():
    """No file of the package is imported under two names, and mmpretrain (optional) and the tools' helpers stay
    out."""
    script = ("import sys, collections, mmmetaformer\n"
              "files = collections.Counter(getattr(m, '__file__', None) or '' for m in list(sys.modules.values()))\n"
              f"print([f for f, n in files.items() if f.startswith({str(PACKAGE)!r}) and n > 1])\n"
              "print(sorted(n for n in sys.modules if n.startswith(('mmpretrain', 'mmmetaformer.utils.cli'))))\n")
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split('\n')[:2] == ['[]', '[]'], result.stdout


@pytest.mark.parametrize('registry, name', [
    ('MODELS', name) for name in ('PoolFormer', 'PoolFormerV2', 'IdentityFormer', 'RandFormer', 'ConvFormer',
                                  'CAFormer', 'MetaFormer', 'Pooling', 'SepConv', 'Attention', 'RandomMixing',
                                  'IdentityMixer', 'StarReLU', 'SquaredReLU', 'ChannelLayerNorm',
                                  'ModifiedLayerNorm', 'MetaFormerClassifier', 'MetaFormerClsHead')
] + [('RUNNERS', 'CrashSafeRunner'), ('OPTIM_WRAPPERS', 'AutocastOptimWrapper'),
     ('OPTIM_WRAPPER_CONSTRUCTORS', 'LayerDecayOptimizerConstructor'),
     ('MODEL_WRAPPERS', 'CPUDistributedDataParallel')])
def test_registry_names_resolve_in_every_scope(registry, name):
    """``mmmetaformer.<Name>`` as the configs write it, found from mmengine's root registry like a runner does (the
    mmpretrain classifier once its module is imported, as the mmpretrain configs' ``custom_imports`` do)."""
    import mmengine.registry
    pytest.importorskip('mmpretrain')

    import mmmetaformer.models.classifiers  # noqa: F401
    assert getattr(mmengine.registry, registry).get(f'mmmetaformer.{name}') is not None


def documented_imports() -> Set[str]:
    """``module:name`` of every ``from mmmetaformer... import name`` and dotted path under ``mmmetaformer`` in
    README.md, except registry names (``mmmetaformer.CrashSafeRunner``: a type in a config, tested above)."""
    text = (Path(ROOT) / 'README.md').read_text()
    found = {f'{module}:{name.strip()}' for module, names in re.findall(r'from (mmmetaformer[\w.]*) import ([\w, ]+)',
                                                                         text) for name in names.split(',')}
    found |= {dotted for dotted in re.findall(r'`(mmmetaformer(?:\.\w+)+)', text)
              if not re.fullmatch(r'mmmetaformer\.[A-Z]\w*', dotted)}
    return found


def test_documented_import_paths_work():
    imports = documented_imports()
    assert 'mmmetaformer:PoolFormer' in imports and 'mmmetaformer.config_file' in imports
    script = ("import importlib, sys\n"
              "for path in sys.argv[1:]:\n"
              "    module, _, name = path.partition(':')\n"
              "    if name:\n"
              "        getattr(importlib.import_module(module), name)\n"
              "        continue\n"
              "    parts = path.split('.')\n"
              "    for cut in range(len(parts), 0, -1):\n"
              "        try:\n"
              "            target = importlib.import_module('.'.join(parts[:cut]))\n"
              "        except ModuleNotFoundError:\n"
              "            continue\n"
              "        for attribute in parts[cut:]:\n"
              "            target = getattr(target, attribute)\n"
              "        break\n"
              "    else:\n"
              "        raise ImportError(path)\n")
    result = subprocess.run([sys.executable, '-c', script, *sorted(imports)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('module, names', [
    ('mmmetaformer.models.utils', ['to_canonical', 'PretrainedFromAnyLayout', 'official_weights_url', 'NAMED_WEIGHTS']),
    ('mmmetaformer.apis.inference', ['run_inference', 'build_inferencer']),
    ('mmmetaformer.models.classifiers', ['MetaFormerClassifier', 'MetaFormerClsHead']),
    ('mmmetaformer.engine', ['CrashSafeRunner', 'AutocastOptimWrapper', 'CPUDistributedDataParallel']),
    ('mmmetaformer.visualization', ['draw_cam', 'draw_feature_maps']),
])
def test_package_level_names_import(module, names):
    import importlib
    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in names)
