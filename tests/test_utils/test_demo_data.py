"""The generated demo data sets (mmmetaformer/testing/demo_data.py)."""
import json
from collections import Counter

from mmmetaformer.testing import make_coco_shapes


def test_shapes_that_fit_nowhere_beside_the_others_are_left_out(tmp_path):
    """Shapes never overlap: in a 40x40 image two shapes of radius 12 cannot be 2 pixels apart (their centres lie
    within 16 pixels of each other on both axes), so each image keeps the first of the shapes drawn for it."""
    root = make_coco_shapes(str(tmp_path), splits=(('train', 6), ), size=(40, 40), max_objects=4, min_radius=12,
                            max_radius=12)
    with open(f'{root}/annotations/instances_train.json') as f:
        data = json.load(f)
    assert len(data['images']) == 6
    assert Counter(a['image_id'] for a in data['annotations']) == {index: 1 for index in range(1, 7)}
    for annotation in data['annotations']:
        x0, y0, width, height = annotation['bbox']
        assert 0 <= x0 and 0 <= y0 and x0 + width <= 40 and y0 + height <= 40 and 0 < width <= 24.01
