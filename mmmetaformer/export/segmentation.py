"""mmseg segmentors as one graph: raw image in, segmentation logits at input size out."""
from typing import Tuple

from torch import Tensor, nn

from .base import BATCH, HEIGHT, WIDTH, ExportModule
from .preprocess import GraphPreprocessor


class SegmentorExport(ExportModule):
    """An mmseg ``EncoderDecoder`` (whole-image inference): ``seg_logits`` (N, num_classes, H, W) at input size,
    what ``predict`` gives as ``seg_logits`` when ``ori_shape`` is the input size: the decode head's logits
    resized to the preprocessed (padded) size, the padding cropped off; sigmoid probabilities for a one-channel head,
    as mmseg's ``postprocess_result`` gives them."""
    output_names = ('seg_logits', )
    output_axes = {'seg_logits': {0: BATCH, 2: HEIGHT, 3: WIDTH}}

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, 'encode_decode'):
            raise TypeError(f'can export mmseg EncoderDecoder models, not {type(model).__name__}')
        mode = (model.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole':
            raise ValueError(f"the segmentor's test_cfg.mode is {mode!r}: only whole-image inference is exported "
                             f"(the graph takes the whole image); add --cfg-options model.test_cfg.mode=whole")
        self.preprocess = GraphPreprocessor.from_data_preprocessor(model.data_preprocessor)
        self.model = model
        self.sigmoid = model.decode_head.out_channels == 1

    def forward(self, input: Tensor) -> Tuple[Tensor]:  # noqa: A002
        height, width = input.shape[-2:]
        x = self.preprocess(input)
        # a tuple, not a torch.Size: mmseg takes a torch.Size img_shape for slide inference
        meta = dict(img_shape=(height, width), pad_shape=tuple(x.shape[-2:]))
        seg_logits = self.model.encode_decode(x, [meta])
        if self.preprocess.pads:
            seg_logits = seg_logits[:, :, :height, :width]
        return (seg_logits.sigmoid() if self.sigmoid else seg_logits, )
