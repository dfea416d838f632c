from .layer_decay_optim_wrapper_constructor import LayerDecayOptimizerConstructor

__all__ = ['LayerDecayOptimizerConstructor']
