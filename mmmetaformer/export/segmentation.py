"""mmseg segmentors as one graph: raw image in, segmentation logits at input size out."""
from typing import Tuple

from torch import Tensor, nn

from .base import BATCH, HEIGHT, WIDTH, ExportError, ExportModule
from .preprocess import GraphPreprocessor


class SegmentorExport(ExportModule):
    """An mmseg ``EncoderDecoder``: ``seg_logits`` (N, num_classes, H, W) at input size, what ``predict`` gives as
    ``seg_logits`` when ``ori_shape`` is the input size: the model's own whole-image or sliding-window inference on
    the preprocessed (padded) image, the padding cropped off; sigmoid probabilities for a one-channel head, as
    mmseg's ``postprocess_result`` gives them. Sliding windows are placed for the traced size, so a ``slide``
    model exports at a fixed size only."""
    output_names = ('seg_logits', )
    output_axes = {'seg_logits': {0: BATCH, 2: HEIGHT, 3: WIDTH}}

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, 'inference'):
            raise ExportError(f'can export mmseg EncoderDecoder models, not {type(model).__name__}')
        if (model.test_cfg or {}).get('mode', 'whole') == 'slide':
            self.fixed_size_reason = ('sliding-window inference (test_cfg.mode=slide) places its windows for one '
                                      'input size (or use --cfg-options model.test_cfg.mode=whole)')
        self.preprocess = GraphPreprocessor.from_data_preprocessor(model.data_preprocessor)
        self.model = model
        self.sigmoid = model.decode_head.out_channels == 1

    def forward(self, input: Tensor) -> Tuple[Tensor]:  # noqa: A002
        height, width = input.shape[-2:]
        x = self.preprocess(input)
        # tuples, not torch.Size: mmseg takes a torch.Size img_shape for a sliding window's
        meta = dict(ori_shape=(height, width), img_shape=(height, width), pad_shape=tuple(x.shape[-2:]))
        seg_logits = self.model.inference(x, [meta])
        if self.preprocess.pads:
            seg_logits = seg_logits[:, :, :height, :width]
        return (seg_logits.sigmoid() if self.sigmoid else seg_logits, )
