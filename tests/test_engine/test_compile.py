"""torch.compile: every family's backbone traces as one graph, and ``--compile`` runs give the eager losses."""

import pytest
import torch

from e2e import logged_losses, run_tool, write_config

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

FAMILIES = [('PoolFormer', 's12'), ('PoolFormerV2', 's12'), ('IdentityFormer', 's12'), ('RandFormer', 's12'),
            ('ConvFormer', 's18'), ('CAFormer', 's18')]


@pytest.mark.slow
@pytest.mark.parametrize('family, arch', FAMILIES)
def test_backbone_traces_without_graph_breaks(family, arch):
    import mmmetaformer
    backbone = getattr(mmmetaformer, family)(arch=arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.1).train()
    for size in ((64, 64), (64, 96)):  # not 224's grids: RandFormer resamples its matrices
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(backbone)(torch.randn(1, 3, *size))
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


def test_compiled_randformer_resamples_as_eager_does():
    from mmmetaformer import RandFormer
    backbone = RandFormer(arch='s12', out_indices=(2, 3)).eval()
    images = torch.randn(1, 3, 64, 96)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(backbone, backend='eager')(images)
        eager = backbone(images)
    for ours, reference in zip(compiled, eager):
        torch.testing.assert_close(ours, reference)


CLS_TINY = """
data_root = '{root}'
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)), dict(type='PackInputs')]
# no drop path, no mixup / cutmix: random numbers drawn inside a compiled graph differ from eager ones
model = dict(backbone=dict(init_cfg=None, drop_path_rate=0.0), train_cfg=None)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline))
val_dataloader = dict(batch_size=3, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""


@pytest.mark.parametrize('backend', ['aot_eager'])
def test_compiled_training_gives_the_eager_losses(tmp_path, backend):
    pytest.importorskip('mmpretrain')
    from mmmetaformer.testing import make_imagenet_folders
    root = make_imagenet_folders(str(tmp_path / 'imagenet'), splits=(('train', 2), ('val', 1)))
    config = write_config(tmp_path / 'cls.py', 'mmpretrain/poolformer_s12_in1k.py', CLS_TINY.format(root=root))
    eager, compiled = tmp_path / 'eager', tmp_path / 'compiled'
    run_tool(['tools/train.py', config, '--work-dir', str(eager)])
    result = run_tool(['tools/train.py', config, '--work-dir', str(compiled), '--compile',
                       '--cfg-options', f'compile.backend={backend}'])
    assert "torch.compile: the model's forward pass is compiled ({'backend': '%s'})" % backend in \
        result.stdout + result.stderr
    expected, losses = ([loss for _, loss in logged_losses(run)] for run in (eager, compiled))
    assert len(losses) == len(expected) == 3
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', ['poolformerv2_s12', 'caformer_s18'])
def test_compiled_blocks_give_the_eager_outputs_and_gradients(name):
    from mmmetaformer.models import FAMILIES as BY_NAME
    family, arch = name.split('_')
    torch.manual_seed(0)
    eager = BY_NAME[family](arch=arch, out_indices=(0, 3))
    compiled = BY_NAME[family](arch=arch, out_indices=(0, 3), compile_blocks=dict(backend='aot_eager'))
    compiled.load_state_dict(eager.state_dict())  # the state dict of compiled blocks keeps its keys
    assert compiled.stages[1].blocks[0]._compiled_call_impl is not None
    x = torch.randn(2, 3, 64, 96)
    results = []
    for model in (eager, compiled):
        loss = sum(out.square().mean() for out in model(x))
        loss.backward()
        results.append((loss.detach(), {k: p.grad for k, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_compiled_blocks_stay_compiled_through_training_and_validation():
    """Training at three input sizes, validating without gradients at two and training again compiles the shared
    block forward 17 times for PoolFormer-S12, past torch's default limit of 8, after which it would run eagerly."""
    import logging

    from mmmetaformer import PoolFormer
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger('torch._dynamo')
    logger.addHandler(handler)
    torch.compiler.reset()
    # torch's default limit, whatever ran before; the patch puts the previous value back (pytest's monkeypatch
    # would delete the setting, which torch's config module then reports as missing)
    with torch._dynamo.config.patch(recompile_limit=8):
        try:
            model = PoolFormer(arch='s12', out_indices=(0, 1, 2, 3), compile_blocks=dict(backend='eager'))
            assert torch._dynamo.config.recompile_limit == 32
            for size in ((96, 128), (128, 96), (160, 160)):
                model.train()(torch.randn(2, 3, *size))[0].sum().backward()
            with torch.no_grad():
                for size in ((96, 128), (160, 96)):
                    model.eval()(torch.randn(1, 3, *size))
            model.train()(torch.randn(2, 3, 96, 160))[0].sum().backward()
        finally:
            logger.removeHandler(handler)
            torch.compiler.reset()
    assert not [r.getMessage() for r in records if 'recompile_limit' in r.getMessage()]
