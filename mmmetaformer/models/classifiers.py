"""mmpretrain pieces (needs mmpretrain): the official MetaFormer classifier heads, and the classifier that loads
every MetaFormer checkpoint layout."""
from typing import Optional, Tuple

from mmengine.logging import MMLogger
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import ClsHead
from torch import Tensor, nn

from ..errors import InvalidSettingError
from ..registry import MODELS
from .layers.blocks import MlpHead
from .utils import HEAD, PretrainedFromAnyLayout, detect_layout, to_canonical


@MODELS.register_module()
class MetaFormerClsHead(PretrainedFromAnyLayout, ClsHead):
    """The official MetaFormer classifier on the last stage map (B, C, H, W).

    - PoolFormer v1 (``norm_before_pool=True``): GroupNorm(1, C) (eps 1e-5) on the full map, global mean, Linear.
    - The v2 family (``norm_before_pool=False``): global mean, LayerNorm(C) (eps 1e-6), then a Linear layer or, with
      ``mlp_head=True`` (ConvFormer, CAFormer), the MlpHead (Linear 4C, SquaredReLU, LayerNorm, dropout, Linear).

    The backbone must return only the last stage without its output norm:
    ``out_indices=(3, ), norm_outputs=False``.

    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` loads the classifier of a checkpoint in any known layout
    (as the backbone does), e.g. the 224 model's head before fine-tuning at 384.
    """
    checkpoint_part = HEAD

    def __init__(self, num_classes: int, in_channels: int, norm_before_pool: bool = False, mlp_head: bool = False,
                 head_dropout: float = 0.0, init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear',
                                                                            std=0.02), **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if head_dropout and not mlp_head:
            raise InvalidSettingError('head_dropout is applied inside the MlpHead; it needs mlp_head=True')
        self.num_classes = num_classes  # as mm heads keep it (the start-up checks compare it with the data)
        self.norm_before_pool = norm_before_pool
        self.norm = nn.GroupNorm(1, in_channels) if norm_before_pool else nn.LayerNorm(in_channels, eps=1e-6)
        self.fc = MlpHead(in_channels, num_classes, head_dropout=head_dropout) if mlp_head else \
            nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        x = feats[-1]
        if self.norm_before_pool:
            return self.norm(x).mean((2, 3))
        return self.norm(x.mean((2, 3)))

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return self.fc(self.pre_logits(feats))


@MODELS.register_module()
class MetaFormerClassifier(ImageClassifier):
    """mmpretrain's ``ImageClassifier`` that loads a whole-classifier checkpoint in any known MetaFormer layout
    (official sail-sg, timm, mmpretrain PoolFormer, ours): ``load_from``, ``mmpretrain.get_model(name,
    pretrained=...)`` and the inferencers take the official files as they are."""

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # The parent module sees the whole state dict first and its children get their parts from the same dict
        # afterwards (torch and mmengine), so converting the keys here serves the backbone and the head.
        own = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        try:
            layout = detect_layout(own)
        except ValueError:  # not a MetaFormer checkpoint: leave it to the usual missing/unexpected key report
            layout = None
        if layout not in (None, 'mmmetaformer'):
            canonical, unused, layout = to_canonical(own)
            for key in own:
                del state_dict[prefix + key]
            state_dict.update((prefix + key, value) for key, value in canonical.items())
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: converted a {layout} checkpoint; unused keys: {unused}')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
