"""A pre-emption checkpoint on a GPU keeps the CUDA random generator too, and a resume puts it back (the
CUDA branches of ``random_states`` / ``restore_random_states`` in engine/hooks/preemption.py)."""
import torch

from mmmetaformer.engine.hooks.preemption import random_states, restore_random_states


def test_the_cuda_random_state_is_saved_and_restored():
    torch.cuda.manual_seed(1)
    torch.empty(1, device='cuda')  # CUDA initialised, as in any run on the GPU
    states = random_states()
    assert torch.equal(states['cuda'], torch.cuda.get_rng_state())
    expected = torch.rand(4, device='cuda')
    torch.cuda.manual_seed(2)
    restore_random_states(states)
    assert torch.equal(torch.rand(4, device='cuda'), expected)
