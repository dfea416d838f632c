"""Model helpers that need no model class: the checkpoint layouts, reading checkpoint files, the official weights
by name, and loading weights into modules."""
from .checkpoint_files import (
    check_checkpoint_path,
    describe_unreadable_checkpoint,
    load_checkpoint_file,
    read_checkpoint,
    training_state_problem,
    unwrap,
)
from .checkpoint_layouts import BACKBONE, HEAD, StateDict, detect_layout, known_layout, to_canonical
from .official_weights import NAMED_WEIGHTS, OFFICIAL_ARCHS, official_weights_url
from .weight_loading import (
                             PretrainedFromAnyLayout,
                             check_model_checkpoint,
                             check_model_weights,
                             check_start_weights,
                             load_pretrained,
                             select_compatible,
                             tensor_mismatches,
)

__all__ = ['BACKBONE', 'HEAD', 'NAMED_WEIGHTS', 'OFFICIAL_ARCHS', 'PretrainedFromAnyLayout', 'StateDict',
           'check_checkpoint_path', 'check_model_checkpoint', 'check_model_weights', 'check_start_weights',
           'describe_unreadable_checkpoint', 'detect_layout', 'known_layout', 'load_checkpoint_file',
           'load_pretrained', 'official_weights_url', 'read_checkpoint', 'select_compatible', 'tensor_mismatches',
           'to_canonical', 'training_state_problem', 'unwrap']
