"""mmpretrain classifiers as one graph: raw image in, class probabilities out."""
from typing import Tuple

import torch
from torch import Tensor, nn

from .base import BATCH, ExportError, ExportModule
from .preprocess import GraphPreprocessor


class ClassifierExport(ExportModule):
    """An mmpretrain ``ImageClassifier``: ``scores`` (N, num_classes), the probabilities its ``predict`` gives as
    ``pred_score`` (softmax of the head's logits; sigmoid for multi-label heads)."""
    output_names = ('scores', )
    output_axes = {'scores': {0: BATCH}}

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        classes = {c.__name__ for c in type(model).__mro__}
        if 'ImageClassifier' not in classes:
            raise ExportError(f'can export mmpretrain ImageClassifier models, not {type(model).__name__}')
        head_classes = {c.__name__ for c in type(model.head).__mro__}
        if 'MultiLabelClsHead' in head_classes:
            self.activation = torch.sigmoid
        elif 'ClsHead' in head_classes:
            self.activation = lambda logits: logits.softmax(dim=1)
        else:
            raise ExportError(f'cannot export the classifier head {type(model.head).__name__}: its predictions are '
                              f'known for subclasses of ClsHead (softmax) and MultiLabelClsHead (sigmoid)')
        self.preprocess = GraphPreprocessor.from_data_preprocessor(model.data_preprocessor)
        self.model = model

    def forward(self, input: Tensor) -> Tuple[Tensor]:  # noqa: A002
        logits = self.model.head(self.model.extract_feat(self.preprocess(input)))
        return (self.activation(logits), )
