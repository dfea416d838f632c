from .activation_maps import (
                              CAM_METHODS,
                              CHANNEL_REDUCTIONS,
                              DEFAULT_TARGET_LAYERS,
                              class_activation_map,
                              draw_cam,
                              draw_feature_maps,
                              find_layer,
                              preprocess_image,
                              stage_outputs,
)

__all__ = ['CAM_METHODS', 'CHANNEL_REDUCTIONS', 'DEFAULT_TARGET_LAYERS', 'class_activation_map', 'draw_cam',
           'draw_feature_maps', 'find_layer', 'preprocess_image', 'stage_outputs']
