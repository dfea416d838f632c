"""The tensor names and shapes of every official MetaFormer checkpoint (tests/data/official_checkpoint_keys.txt,
made by instantiating the official models), as empty state dicts."""
import os
import re
from typing import Dict, Tuple

import torch

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'official_checkpoint_keys.txt')


def official_checkpoints() -> Dict[str, Tuple[int, Dict[str, Tuple[int, ...]]]]:
    """name -> (number of elements, {tensor name: shape})."""
    result = {}
    for block in re.split(r'^# ', open(PATH).read(), flags=re.M)[1:]:
        lines = block.strip().split('\n')
        name = lines[0].split(':')[0].split(' ')[0]
        count = round(float(re.search(r'([\d.]+)M elements', lines[0]).group(1)) * 1e6)
        shapes = {}
        for line in lines[1:]:
            key, shape = line.split('\t')
            shapes[key] = tuple(int(s) for s in re.findall(r'\d+', shape))
        result[name] = (count, shapes)
    return result


def empty_state_dict(shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in shapes.items()}
