"""Every kind of bad checkpoint file gets one message that says what the file is and what to do
(models/utils/checkpoint_files.py, weight_loading.py: shared by every tool that reads a checkpoint)."""
import zipfile
from unittest import mock

import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.errors import FileAccessError, InvalidSettingError, MissingFileError
from mmmetaformer.models.utils import (
    check_model_weights,
    check_start_weights,
    load_checkpoint_file,
    read_checkpoint,
    training_state_problem,
)


@pytest.fixture(scope='module')
def complete(module_tmp_factory):
    path = module_tmp_factory.mktemp('ckpt') / 'complete.pth'
    torch.save(dict(state_dict={'weight': torch.zeros(64, 64)}, meta=dict(epoch=1, iter=2), optimizer={}), path)
    return path


def written(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_each_kind_of_unreadable_file_is_named(complete, tmp_path):
    whole = complete.read_bytes()
    legacy = tmp_path / 'legacy.pth'
    torch.save({'weight': torch.zeros(64, 64)}, legacy, _use_new_zipfile_serialization=False)
    zipped = tmp_path / 'other.zip'
    with zipfile.ZipFile(zipped, 'w') as archive:
        archive.writestr('notes.txt', 'hello')
    cases = {
        written(tmp_path, 'empty.pth', b''): 'is empty (0 bytes): the save or copy that wrote it was interrupted',
        written(tmp_path, 'cut.pth', whole[:len(whole) // 2]):
            f'is a truncated zip archive ({len(whole) // 2} bytes, its end is missing)',
        written(tmp_path, 'cut_legacy.pth', legacy.read_bytes()[:200]):
            "looks like a torch checkpoint of the old (pickle) format that is damaged or cut short (200 bytes)",
        str(zipped): 'is a zip archive but not a torch checkpoint',
        written(tmp_path, 'notes.pth', b'learning rate 0.1\nepochs 12\n'):
            "is not a torch checkpoint but a text file (it starts with 'learning rate 0.1')",
        written(tmp_path, 'noise.pth', bytes(range(200, 256)) * 4): 'is not a torch checkpoint (an unknown binary',
    }
    for path, expected in cases.items():
        with pytest.raises(FileAccessError) as error:
            load_checkpoint_file(path)
        assert str(error.value).startswith(f'{path} {expected}')
        assert '\n' not in str(error.value)
    with pytest.raises(MissingFileError, match='checkpoint .*nowhere.pth does not exist'):
        load_checkpoint_file(str(tmp_path / 'nowhere.pth'))


def test_a_damaged_torch_checkpoint_names_what_torch_load_said(complete, tmp_path):
    """A complete zip archive with torch's data.pkl whose tensor data is missing."""
    damaged = tmp_path / 'damaged.pth'
    with zipfile.ZipFile(complete) as source, zipfile.ZipFile(damaged, 'w') as archive:
        for name in source.namelist():
            if '/data/' not in name:
                archive.writestr(name, source.read(name))
    with pytest.raises(FileAccessError) as error:
        load_checkpoint_file(str(damaged))
    assert str(error.value).startswith(f'{damaged} is a torch checkpoint that torch.load could not read: ')
    assert 'data/0' in str(error.value) and '\n' not in str(error.value)


def test_a_folder_or_an_unreadable_file_is_named(complete, tmp_path):
    with pytest.raises(FileAccessError, match=f'^cannot read checkpoint {tmp_path}: it is a folder; give the '
                                              r'checkpoint file in it \(e\.g\. the \.pth file that training wrote\)$'):
        load_checkpoint_file(str(tmp_path))
    from mmengine.runner.checkpoint import CheckpointLoader
    denied = PermissionError(13, 'Permission denied', str(complete))  # as the file system answers a non-owner
    with mock.patch.object(CheckpointLoader, 'load_checkpoint', side_effect=denied), \
            pytest.raises(FileAccessError, match=f"^cannot read checkpoint {complete}: .*Permission denied"):
        load_checkpoint_file(str(complete))


def test_a_checkpoint_must_hold_a_dict_of_tensors(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([torch.zeros(2)], path)
    with pytest.raises(InvalidSettingError, match='a checkpoint must be a dict of tensors, got list'):
        read_checkpoint(str(path))
    torch.save({'model': {'module.fc.weight': torch.ones(2), 'step': 3}}, path)
    state_dict = read_checkpoint(str(path))  # unwrapped, without the DDP prefix and the non-tensors
    assert list(state_dict) == ['fc.weight'] and torch.equal(state_dict['fc.weight'], torch.ones(2))


def test_weights_without_training_state_cannot_be_resumed_from(complete):
    assert training_state_problem(str(complete), torch.load(complete, weights_only=False)) is None
    problem = training_state_problem('w.pth', {'state_dict': {}, 'meta': {'epoch': 3}})
    assert problem == ('w.pth holds weights without the training state needed to resume (no meta.iter, optimizer): '
                       '--resume / resume=True continue a run from a checkpoint its training wrote. To start a new '
                       'run from these weights use --cfg-options load_from=w.pth without --resume.')
    assert 'no meta.epoch, meta.iter, optimizer' in training_state_problem('w.pth', {'backbone.x': torch.zeros(1)})


def test_another_architecture_is_refused_to_resume_test_and_to_start_from():
    class Detector(torch.nn.Module):
        def __init__(self, arch, classes):
            super().__init__()
            self.backbone = mmf.PoolFormer(arch, out_indices=(3, ))
            self.head = torch.nn.Linear(512, classes)

    model = Detector('s12', 3)
    other_classes = Detector('s12', 80).state_dict()
    check_start_weights(other_classes, model, 'coco.pth')  # fine-tuning: only the head differs
    with pytest.raises(InvalidSettingError, match='does not fit the model of this config .*head.weight'):
        check_model_weights(other_classes, model, 'coco.pth')
    other_arch = dict(model.state_dict(), **{'backbone.stem.conv.weight': torch.zeros(96, 3, 7, 7)})  # an M stem
    with pytest.raises(InvalidSettingError) as error:
        check_start_weights(other_arch, model, 'm36.pth')
    assert str(error.value).startswith("load_from=m36.pth is a checkpoint of another architecture (tensor "
                                       "'backbone.stem.conv.weight' has shape (96, 3, 7, 7) in the checkpoint but "
                                       "(64, 3, 7, 7) in the model)")
    deeper = dict(model.state_dict(), **{'backbone.stages.0.blocks.9.mlp.fc1.weight': torch.zeros(1)})
    with pytest.raises(InvalidSettingError, match="'backbone.stages.0.blocks.9.mlp.fc1.weight' has shape \\(1,\\) "
                                                  "in the checkpoint but absent in the model"):
        check_start_weights(deeper, model, 'deeper.pth')
    with pytest.raises(InvalidSettingError, match=r'none of its 1 tensors has the name and shape'):
        check_start_weights({'fc.weight': torch.zeros(2)}, model, 'foreign.pth')
