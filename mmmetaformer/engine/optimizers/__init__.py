from .autocast_optim_wrapper import AutocastOptimWrapper
from .layer_decay_optim_wrapper_constructor import LayerDecayOptimizerConstructor

__all__ = ['AutocastOptimWrapper', 'LayerDecayOptimizerConstructor']
