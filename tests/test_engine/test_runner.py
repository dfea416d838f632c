import os
import time

import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.engine import latest_complete_checkpoint


def _save(path, step):
    torch.save({'meta': {'epoch': step}}, path)
    time.sleep(0.02)  # distinct modification times


def test_the_newest_complete_checkpoint_wins_even_without_last_checkpoint(tmp_path):
    _save(tmp_path / 'epoch_1.pth', 1)
    _save(tmp_path / 'epoch_2.pth', 2)
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path):
    _save(tmp_path / 'epoch_1.pth', 1)
    _save(tmp_path / 'epoch_2.pth', 2)
    data = (tmp_path / 'epoch_2.pth').read_bytes()
    (tmp_path / 'epoch_2.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')


def test_last_checkpoint_may_point_outside_the_work_dir(tmp_path):
    elsewhere = tmp_path / 'out'
    elsewhere.mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    _save(elsewhere / 'iter_50.pth', 50)
    (work / 'last_checkpoint').write_text(str(elsewhere / 'iter_50.pth'))
    assert latest_complete_checkpoint(str(work)) == str(elsewhere / 'iter_50.pth')


def test_nothing_to_resume(tmp_path):
    (tmp_path / 'epoch_1.pth').write_bytes(b'')
    assert latest_complete_checkpoint(str(tmp_path)) is None
    os.remove(tmp_path / 'epoch_1.pth')
    assert latest_complete_checkpoint(str(tmp_path)) is None


def test_autocast_optim_wrapper_runs_the_forward_in_bf16_with_fp32_norms():
    from mmmetaformer.engine import AutocastOptimWrapper
    model = mmf.PoolFormer('s12', out_indices=(3, ))
    wrapper = AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook

    block = model.stages[3].blocks[0]
    block.mlp.fc1.register_forward_hook(record('fc1'))
    norm_inputs = []
    original = block.norm1._normalize
    block.norm1._normalize = lambda x, dtype: norm_inputs.append(x.dtype) or original(x, dtype)
    with wrapper.optim_context(model):
        out = model(torch.randn(1, 3, 64, 64))[0]
    assert seen['fc1'] == torch.bfloat16
    assert norm_inputs == [torch.float32]  # statistics computed in float32
    assert torch.isfinite(out.float()).all()


def test_validation_and_test_compile_the_forward_pass_when_the_config_asks(tmp_path):
    from mmengine.evaluator import BaseMetric
    from test_work_dir_guard import toy_runner

    class Count(BaseMetric):
        """The number of samples predicted, and the outputs' width."""

        def process(self, data_batch, data_samples):
            self.results.extend(len(output) for output in data_samples)

        def compute_metrics(self, results):
            return dict(samples=len(results), width=results[0])

    loader = dict(dataset=[dict(inputs=torch.randn(8)) for _ in range(3)], sampler=dict(type='DefaultSampler',
                  shuffle=False), batch_size=2, collate_fn=dict(type='pseudo_collate'))
    runner = toy_runner(tmp_path, width=8, cfg=dict(compile=dict(backend='eager')), val_dataloader=loader,
                        val_cfg=dict(), val_evaluator=[Count()], test_dataloader=loader, test_cfg=dict(),
                        test_evaluator=[Count()])
    compiled = []
    compile_model = runner.model.compile
    runner.model.compile = lambda **options: compiled.append(options) or compile_model(**options)
    assert runner.val() == dict(samples=3, width=8)
    assert compiled == [dict(backend='eager')]
    assert runner.test() == dict(samples=3, width=8)
    assert compiled == [dict(backend='eager')]  # compiled once for both


def test_a_class_name_that_the_mmseg_data_set_type_lacks_stops_before_the_data_set_is_built(tmp_path):
    pytest.importorskip('mmseg')
    from mmseg.datasets import ADE20KDataset
    from test_work_dir_guard import toy_runner

    from mmmetaformer.engine.hooks.startup_checks import StartupCheckError
    loader = dict(dataset=dict(type=ADE20KDataset, data_root=str(tmp_path / 'nowhere'),
                               metainfo=dict(classes=('wall', 'bulding'))), batch_size=1)
    with pytest.raises(StartupCheckError, match="^train_dataloader.dataset: the classes 'bulding' \\(did you mean "
                                                "'building'\\?\\) are not classes of ADE20KDataset"):
        toy_runner(tmp_path).build_dataloader(loader)
