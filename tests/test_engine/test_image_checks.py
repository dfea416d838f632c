"""The image check of ``data_checks.images`` (engine/image_checks.py) on small data sets of generated files: which
samples each mode decodes, the data sets it leaves unchecked, the wrapped data sets it cannot drop samples from."""
import pytest
from mmengine.dataset import BaseDataset, RepeatDataset
from PIL import Image

from mmmetaformer.engine import image_checks
from mmmetaformer.engine.hooks.startup_checks import StartupCheckError
from mmmetaformer.errors import InvalidSettingError


class Images(BaseDataset):
    """An mmengine data set of the image files ``paths``."""

    def __init__(self, paths) -> None:
        self.paths = [str(path) for path in paths]
        super().__init__(serialize_data=False)

    def load_data_list(self):
        return [dict(img_path=path) for path in self.paths]


def image_files(folder, good: int, corrupt=(), missing=()) -> list:
    """``good`` + ... paths in ``folder``, in order: valid PNG files, then corrupt ones, then missing ones."""
    paths = []
    for index in range(good):
        paths.append(folder / f'good_{index}.png')
        Image.new('RGB', (8, 8), (index, 0, 0)).save(paths[-1])
    for name in corrupt:
        paths.append(folder / name)
        paths[-1].write_bytes(b'\x89PNG\r\n\x1a\n not an image')
    return paths + [folder / name for name in missing]


def test_sample_mode_decodes_samples_spread_over_the_data_set_and_checks_every_file_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(image_checks, 'SAMPLE_SIZE', 3)  # of 5 samples: indices 0, 2 and 4 are decoded
    good = image_files(tmp_path, 2)
    paths = [good[0], *image_files(tmp_path, 0, corrupt=('c1.png', 'c2.png'), missing=('gone.png', )), good[1]]
    bad = image_checks.find_bad_samples(Images(paths), 'sample')
    assert [(index, path) for index, path, _ in bad] == [(2, str(tmp_path / 'c2.png')), (3, str(tmp_path / 'gone.png'))]
    assert bad[0][2].startswith('cannot be decoded (UnidentifiedImageError: ') and bad[1][2] == 'missing'
    # c1.png (index 1) exists and is not decoded


def test_auto_leaves_a_large_data_set_unchecked_with_a_warning_and_off_checks_nothing(tmp_path):
    class Large:
        """A data set of ``AUTO_LIMIT`` samples whose files must not be looked at."""

        def __len__(self) -> int:
            return image_checks.AUTO_LIMIT

        def get_data_info(self, index):
            raise AssertionError('an unchecked data set was read')

    said = []
    image_checks.check_images(Large(), 'val', dict(images='auto', skip_bad_images=False), said.append)
    assert said == [f'the validation data set has {image_checks.AUTO_LIMIT} samples: its images are not checked '
                    'before the run (data_checks=dict(images="all" or "sample") checks them).']
    missing = Images(image_files(tmp_path, 0, missing=('gone.png', )))
    image_checks.check_images(missing, 'train', dict(images='off', skip_bad_images=False), said.append)
    image_checks.check_images(Images([]), 'train', dict(images='all', skip_bad_images=False), said.append)
    assert len(said) == 1 and len(missing) == 1
    with pytest.raises(StartupCheckError, match='1 of the 1 samples of the training data set have bad files'):
        image_checks.check_images(missing, 'train', dict(images='exist', skip_bad_images=False), said.append)


def test_skip_bad_images_cannot_drop_samples_from_a_wrapped_data_set(tmp_path):
    repeated = RepeatDataset(Images(image_files(tmp_path, 1, missing=('gone.png', ))), times=2)
    with pytest.raises(InvalidSettingError) as error:
        image_checks.check_images(repeated, 'train', dict(images='all', skip_bad_images=True), print)
    gone = tmp_path / 'gone.png'
    assert str(error.value) == (
        f'2 of the 4 samples of the training data set have bad files: {gone} (missing); {gone} (missing). '
        'data_checks.skip_bad_images cannot drop samples from a RepeatDataset; replace or remove the files.')
    assert len(repeated) == 4
