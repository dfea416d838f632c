"""The helpers of the command-line tools (utils/cli.py)."""
import argparse
import os
import os.path as osp

import pytest

from conftest import ROOT


def test_tta_without_tta_pipeline_is_a_clear_error():
    from mmengine.config import Config

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.utils.cli import enable_tta
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmdet', 'retinanet_poolformer_s12_1x.py'))
    with pytest.raises(InvalidSettingError, match='--tta needs tta_pipeline and tta_model'):
        enable_tta(cfg)


def test_missing_data_skips_absent_loaders_and_checks_a_bare_data_root(tmp_path):
    """A split without a dataloader needs nothing; a dataset with only a ``data_root`` needs that folder."""
    from mmengine.config import Config

    from mmmetaformer.utils.cli import missing_data
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='Folders', data_root=str(tmp_path / 'absent'))),
                      val_dataloader=None))
    assert missing_data(cfg, ['train', 'val', 'test']) == [str(tmp_path / 'absent')]
    (tmp_path / 'absent').mkdir()
    assert missing_data(cfg, ['train', 'val', 'test']) == []


def test_amp_keeps_an_optimizer_wrapper_the_config_chose(capsys):
    from mmengine.config import Config

    from mmmetaformer.utils.cli import enable_amp
    cfg = Config(dict(optim_wrapper=dict(type='mmmetaformer.AutocastOptimWrapper', optimizer=dict(type='AdamW'))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.to_dict() == dict(type='mmmetaformer.AutocastOptimWrapper', optimizer=dict(type='AdamW'))
    assert capsys.readouterr().out == ('--amp: the config already chose the optimizer wrapper '
                                       'mmmetaformer.AutocastOptimWrapper; it is kept as it is.\n')


def tool_args(config: str, **options) -> argparse.Namespace:
    """The arguments of a tool run on ``config``, as :func:`~mmmetaformer.utils.cli.add_shared_options` parses them."""
    defaults = dict(config=config, cfg_options=None, launcher='none', work_dir=None, local_rank=None, compile=False)
    return argparse.Namespace(**{**defaults, **options})


def test_load_config_passes_an_old_launchers_local_rank_and_turns_compile_on(tmp_path, monkeypatch):
    from mmmetaformer.utils.cli import load_config
    config = tmp_path / 'tiny.py'
    config.write_text("model = dict(type='Tiny')\n")
    monkeypatch.setenv('LOCAL_RANK', 'unset by this test')
    monkeypatch.delenv('LOCAL_RANK')  # restored (to absent or its value) after the test
    cfg = load_config(tool_args(str(config), local_rank=3, compile=True))
    assert os.environ['LOCAL_RANK'] == '3'
    assert (cfg.compile, cfg.launcher, cfg.work_dir) == (True, 'none', './work_dirs/tiny')
    load_config(tool_args(str(config), local_rank=5))
    assert os.environ['LOCAL_RANK'] == '3'  # a launcher's variable wins over --local_rank

    config.write_text("model = dict(type='Tiny')\ncompile = dict(backend='eager')\n")
    assert load_config(tool_args(str(config), compile=True)).compile == dict(backend='eager')
    assert load_config(tool_args(str(config))).compile == dict(backend='eager')
