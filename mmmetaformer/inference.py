"""Former home of the inference helpers, kept so that existing imports work; they live in
:mod:`mmmetaformer.apis.inference`."""
from .apis.inference import (
                             DEFAULT_SCORE_THR,
                             add_inference_options,
                             build_inferencer,
                             collect_inputs,
                             load_model_config,
                             run_inference,
)

__all__ = ['DEFAULT_SCORE_THR', 'add_inference_options', 'build_inferencer', 'collect_inputs', 'load_model_config',
           'run_inference']
