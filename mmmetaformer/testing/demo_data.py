"""Small generated data sets in the standard on-disk layouts, for the demo and the end-to-end tests.

- :func:`make_coco_shapes`: COCO-format detection/instance data of drawn shapes (boxes and polygon masks).
- :func:`make_ade20k_like`: ADE20K-layout segmentation data (label 0 = unlabelled, classes 1..N).
- :func:`make_imagenet_folders`: ImageNet-style class folders.
"""
import json
import math
import os
import os.path as osp
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('square', 'circle', 'triangle')


def _polygon(kind: str, cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
    if kind == 'square':
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == 'triangle':
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    base = rng.integers(0, 90, size=3)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_coco_shapes(root: str, splits: Sequence[Tuple[str, int]] = (('train', 200), ('val', 50)),
                     size: Tuple[int, int] = (128, 128), max_objects: int = 3, min_radius: int = 12,
                     max_radius: int = 28, seed: int = 0) -> str:
    """Write ``root/{split}/*.jpg`` and ``root/annotations/instances_{split}.json`` with non-overlapping squares,
    circles and triangles in random bright colours; returns ``root``."""
    rng = np.random.default_rng(seed)
    height, width = size
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPES)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, count in splits:
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image = _background(rng, height, width)
            draw = ImageDraw.Draw(image)
            placed = []
            for _ in range(int(rng.integers(1, max_objects + 1))):
                for _attempt in range(20):
                    r = float(rng.uniform(min_radius, max_radius))
                    cx, cy = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
                    if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                        break
                else:
                    continue
                placed.append((cx, cy, r))
                label = int(rng.integers(len(SHAPES)))
                points = _polygon(SHAPES[label], cx, cy, r)
                draw.polygon(points, fill=tuple(int(c) for c in rng.integers(130, 256, size=3)))
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
                area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
                annotations.append(dict(id=len(annotations) + 1, image_id=index + 1, category_id=label + 1,
                                        bbox=[x0, y0, x1 - x0, y1 - y0], area=area, iscrowd=0,
                                        segmentation=[[c for p in points for c in p]]))
            name = f'{split}_{index:05d}.jpg'
            image.save(osp.join(root, split, name), quality=95)
            images.append(dict(id=index + 1, file_name=name, height=height, width=width))
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return root


def make_ade20k_like(root: str, num_classes: int = 150, splits: Sequence[Tuple[str, int]] = (('training', 8),
                     ('validation', 4)), size: Tuple[int, int] = (96, 128), seed: int = 0) -> str:
    """Write ``root/images/{split}/*.jpg`` and ``root/annotations/{split}/*.png`` as ADE20K does: 0 is unlabelled,
    1..num_classes are the classes. Each image is a few coloured rectangles whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    height, width = size
    palette = rng.integers(0, 256, size=(num_classes + 1, 3))
    for split, count in splits:
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for index in range(count):
            label = np.zeros((height, width), dtype=np.uint8)
            for _ in range(4):
                y0, x0 = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
                y1, x1 = int(rng.integers(y0 + 8, height + 1)), int(rng.integers(x0 + 8, width + 1))
                label[y0:y1, x0:x1] = rng.integers(1, min(num_classes, 8) + 1)
            image = palette[label].astype(np.uint8)
            name = f'ADE_{split}_{index:08d}'
            Image.fromarray(image).save(osp.join(root, 'images', split, name + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(root, 'annotations', split, name + '.png'))
    return root


def make_imagenet_folders(root: str, classes: Sequence[str] = ('n01440764', 'n01443537', 'n01484850'),
                          splits: Sequence[Tuple[str, int]] = (('train', 6), ('val', 3)),
                          size: Tuple[int, int] = (64, 80), seed: int = 0) -> str:
    """Write ``root/{split}/{wnid}/*.JPEG``; each class has its own dominant colour so that it can be learnt."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, per_class in splits:
        for label, wnid in enumerate(classes):
            folder = osp.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 151 + 160) % 256])
            for index in range(per_class):
                noise = rng.integers(-30, 30, size=(height, width, 3))
                image = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(osp.join(folder, f'{wnid}_{index}.JPEG'), quality=95)
    return root
