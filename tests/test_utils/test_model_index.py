"""The model zoo: model-index.yml and the metafiles against the configs (names, one entry each, parameter counts,
README tables)."""
import os
import shutil
from pathlib import Path

import pytest
import yaml

from mmmetaformer.utils import model_index
from mmmetaformer.utils.complexity import build_model_from_config
from conftest import ROOT
from e2e import run_tool_here

MODELS = model_index.models(Path(ROOT))


def test_model_index_imports_exist_and_every_config_has_one_entry():
    imported = model_index.metafiles(Path(ROOT))
    assert {'configs/mmdet/metafile.yml', 'configs/mmpretrain/metafile.yml'} <= set(imported)
    assert model_index.check_model_index(Path(ROOT)) == []
    names = [model['Name'] for model in MODELS]
    assert len(names) == len(set(names))
    assert {'caformer_s18_in1k', 'caformer_b36_384_in1k', 'retinanet_poolformer_s12_1x'} <= set(names)


def test_model_index_check_finds_a_config_without_entry(tmp_path):
    shutil.copytree(Path(ROOT, 'configs'), tmp_path / 'configs')
    shutil.copy(Path(ROOT, 'model-index.yml'), tmp_path)
    (tmp_path / 'configs/mmdet/retinanet_new_1x.py').write_text("_base_ = './retinanet_poolformer_s12_1x.py'\n")
    assert model_index.check_model_index(tmp_path) == [
        'configs/mmdet/metafile.yml: config configs/mmdet/retinanet_new_1x.py has 0 entries, not 1']


def test_metafiles_load_through_modelindex():
    from modelindex.load_model_index import load
    index = load(os.path.join(ROOT, 'model-index.yml'))
    index.build_models_with_collections()
    loaded = {model.name: model for model in index.models}
    assert set(loaded) == {model['Name'] for model in MODELS}
    caformer = loaded['caformer_s18_in1k']
    assert caformer.full_model.paper['URL'] == 'https://arxiv.org/abs/2210.13452'
    assert caformer.results.data[0].metrics['Top 1 Accuracy'] == 83.6
    assert caformer.weights == 'https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18.pth'


def stage_pages() -> dict:
    """The generated page that tools/model_zoo.py gives update_readmes from the backbones."""
    from mmmetaformer.models.backbones.families import stage_table_page
    return {model_index.STAGE_PAGE: stage_table_page()}


def test_readme_tables_and_generated_pages_are_the_metafiles():
    assert model_index.update_readmes(Path(ROOT), check=True, pages=stage_pages()) == []


def test_the_generated_pages_follow_their_sources(tmp_path):
    """A metafile change reaches the README and the model zoo page (its links moved to the docs' folder); a stale
    page is reported by --check and rewritten without it."""
    for name in ('configs', 'docs'):
        shutil.copytree(Path(ROOT, name), tmp_path / name, ignore=shutil.ignore_patterns('_build'))
    shutil.copy(Path(ROOT, 'model-index.yml'), tmp_path)
    metafile = tmp_path / 'configs/mmseg/metafile.yml'
    metafile.write_text(metafile.read_text().replace('fpn_poolformer_s12_40k_ade20k.py', 'fpn_renamed.py', 1))
    (tmp_path / 'docs/en/stage_widths.md').write_text('stale\n')
    expected = ['configs/mmseg/README.md', 'docs/en/model_zoo.md', 'docs/en/stage_widths.md']
    assert model_index.update_readmes(tmp_path, check=True, pages=stage_pages()) == expected
    assert model_index.update_readmes(tmp_path, pages=stage_pages()) == expected
    assert model_index.update_readmes(tmp_path, check=True, pages=stage_pages()) == []
    page = (tmp_path / 'docs/en/model_zoo.md').read_text()
    assert '`configs/mmseg/fpn_renamed.py`' in page and '## ADE20K semantic segmentation' in page
    assert '](user_guides/inference.md#models-by-name-mmpretrain)' in page
    assert (tmp_path / 'docs/en/stage_widths.md').read_text() == Path(ROOT, 'docs/en/stage_widths.md').read_text()


def test_stage_widths_are_the_arch_tables():
    from mmmetaformer.models.backbones.arch_tables import CONVFORMER_DIMS, POOLFORMER_DIMS
    from mmmetaformer.models.backbones.families import FAMILIES, stage_table
    rows = {(family, arch): (dims, strides) for family, arch, _, dims, strides in stage_table()}
    assert len(rows) == 28 == sum(len(family.arch_settings) for family in FAMILIES.values())
    for (family, arch), (dims, strides) in rows.items():
        assert dims == (CONVFORMER_DIMS if family in ('ConvFormer', 'CAFormer') else POOLFORMER_DIMS)[arch]
        assert strides == (4, 8, 16, 32)
    assert '| CAFormer | s18 | `type=\'mmmetaformer.CAFormer\', arch=\'s18\'` | 3, 3, 9, 3 | `[64, 128, 320, 512]` | ' \
        '4, 8, 16, 32 |' in Path(ROOT, 'docs/en/stage_widths.md').read_text()


@pytest.mark.e2e
@pytest.mark.parametrize('task', sorted({Path(model['Config']).parts[1] for model in MODELS}))
def test_parameter_counts_are_those_of_the_built_models(task):
    pytest.importorskip(task)
    entries = [model for model in MODELS if Path(model['Config']).parts[1] == task]
    wrong = {}
    for model in entries:
        model_on_meta = build_model_from_config(os.path.join(ROOT, model['Config']), 'meta')
        count = sum(p.numel() for p in model_on_meta.parameters())
        if count != model['Metadata']['Parameters']:
            wrong[model['Name']] = (model['Metadata']['Parameters'], count)
    assert wrong == {}, 'metafile Parameters differ from the built models (metafile, built)'


def test_model_zoo_tool_checks_rewrites_and_reports(tmp_path, monkeypatch):
    """On a copy of the configs: --check finds a changed table and changes nothing, a plain run rewrites it as the
    metafile says, an unlisted config and a README without table markers are reported."""
    shutil.copytree(Path(ROOT, 'configs'), tmp_path / 'configs')
    shutil.copy(Path(ROOT, 'model-index.yml'), tmp_path)
    monkeypatch.setattr(model_index, 'package_root', lambda: tmp_path)
    readme = tmp_path / 'configs' / 'mmpretrain' / 'README.md'
    published = readme.read_text()
    changed = published.replace('| 83.6 |', '| 99.9 |', 1)
    assert changed != published
    readme.write_text(changed)
    assert run_tool_here(['tools/model_zoo.py', '--check'], status=1) == (
        'configs/mmpretrain/README.md: differs from what it is generated from\n')
    assert readme.read_text() == changed
    assert run_tool_here(['tools/model_zoo.py']) == (
        'configs/mmpretrain/README.md: rewritten from what it is generated from\n')
    assert readme.read_text() == published
    assert run_tool_here(['tools/model_zoo.py', '--check']) == ''
    (tmp_path / 'configs/mmdet/retinanet_new_1x.py').write_text("_base_ = './retinanet_poolformer_s12_1x.py'\n")
    assert run_tool_here(['tools/model_zoo.py', '--check'], status=1) == (
        'model index: configs/mmdet/metafile.yml: config configs/mmdet/retinanet_new_1x.py has 0 entries, not 1\n')
    readme.write_text('no table here\n')
    printed = run_tool_here(['tools/model_zoo.py'], status=1)
    assert printed == (f'error: {readme} has no table markers: add the lines {model_index.TABLE_BEGIN} and '
                       f'{model_index.TABLE_END} where the table of configs/mmpretrain/metafile.yml goes\n')


def tiny_zoo(root: Path, models: list) -> Path:
    """A checkout with one task, ``configs/mmdet``: its metafile (collection ``PoolFormer``, ``models``), README and
    one config, ``b.py``."""
    (root / 'configs' / 'mmdet').mkdir(parents=True)
    (root / 'model-index.yml').write_text(yaml.safe_dump({'Import': ['configs/mmdet/metafile.yml']}))
    (root / 'configs' / 'mmdet' / 'metafile.yml').write_text(
        yaml.safe_dump({'Collections': [{'Name': 'PoolFormer'}], 'Models': models}))
    (root / 'configs' / 'mmdet' / 'b.py').write_text('')
    (root / 'configs' / 'mmdet' / 'README.md').write_text(
        '# Detection\n\nSee [the paper](https://arxiv.org/abs/2111.11418), [the table](#results) and '
        f'[the config](b.py).\n\n{model_index.TABLE_BEGIN}\n{model_index.TABLE_END}\n')
    return root


def test_model_index_check_names_each_wrong_entry(tmp_path):
    root = tiny_zoo(tmp_path, [
        {'Name': 'a', 'Config': 'configs/mmseg/a.py', 'In Collection': 'PoolFormer'},
        {'Name': 'b_renamed', 'Config': 'configs/mmdet/b.py', 'In Collection': 'ConvFormer',
         'Results': [{'Task': 'Object Detection', 'Metrics': {'box AP': 36.2}}]},
    ])
    assert model_index.check_model_index(root) == [
        "configs/mmdet/metafile.yml: a: config 'configs/mmseg/a.py' is not in configs/mmdet/",
        "configs/mmdet/metafile.yml: a: config 'configs/mmseg/a.py' does not exist",
        "configs/mmdet/metafile.yml: name 'b_renamed' differs from its config name 'b'",
        "configs/mmdet/metafile.yml: b_renamed: unknown collection 'ConvFormer'",
        'configs/mmdet/metafile.yml: b_renamed: Results and Results Source go together',
    ]


def test_a_metafile_the_index_imports_must_exist(tmp_path):
    root = tiny_zoo(tmp_path, [])
    (root / 'model-index.yml').write_text(yaml.safe_dump({'Import': ['configs/mmdet/metafile.yml',
                                                                     'configs/mmseg/metafile.yml']}))
    with pytest.raises(FileNotFoundError, match=r"imports missing metafiles: \['configs/mmseg/metafile.yml'\]"):
        model_index.metafiles(root)


def test_the_zoo_page_moves_only_the_relative_links_of_the_notes(tmp_path):
    """The README's notes on the docs page: a link to a file follows it to the docs' folder; a web address and
    an anchor stay as they are."""
    root = tiny_zoo(tmp_path, [{'Name': 'b', 'Config': 'configs/mmdet/b.py', 'In Collection': 'PoolFormer',
                                'Metadata': {'Parameters': 21_000_000, 'FLOPs': 192_000_000_000}}])
    page = model_index.render_zoo_page(root)
    assert ('See [the paper](https://arxiv.org/abs/2111.11418), [the table](#results) and '
            '[the config](../../configs/mmdet/b.py).') in page
    assert '| `configs/mmdet/b.py` | 21.00 | 192.00 | - | - |' in page
