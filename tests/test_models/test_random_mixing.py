import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.models.layers.token_mixers import RandomMixing


def test_official_grid_uses_the_stored_matrix_unchanged():
    mixer = RandomMixing(dim=8, num_tokens=196)
    assert mixer.mixing_matrix(14, 14) is mixer.random_matrix
    x = torch.randn(2, 14, 14, 8)
    expected = torch.einsum('mn,bnc->bmc', mixer.random_matrix, x.reshape(2, 196, 8)).reshape(x.shape)
    torch.testing.assert_close(mixer(x), expected)


@pytest.mark.parametrize('grid', [(7, 7), (25, 34), (50, 84), (1, 1), (3, 40)])
def test_resampled_matrix_is_a_proper_mixing(grid):
    mixer = RandomMixing(dim=4, num_tokens=196)
    matrix = mixer.mixing_matrix(*grid)
    n = grid[0] * grid[1]
    assert matrix.shape == (n, n)
    assert (matrix >= 0).all()
    torch.testing.assert_close(matrix.sum(1), torch.ones(n))


def test_resampling_keeps_the_spatial_structure():
    """Upsampling by 2 then reading the token at the same place mixes from the same places."""
    mixer = RandomMixing(dim=4, num_tokens=49)
    with torch.no_grad():
        mixer.random_matrix.copy_(torch.eye(49))  # pure identity mixing
    matrix = mixer.mixing_matrix(14, 14)
    # an identity mixing stays local: every token's strongest source is itself or an adjacent token
    source = matrix.argmax(1)
    own = torch.arange(196)
    distance = torch.maximum((source // 14 - own // 14).abs(), (source % 14 - own % 14).abs())
    assert distance.max() <= 1


def test_cache_is_dropped_when_the_matrix_changes():
    mixer = RandomMixing(dim=4, num_tokens=49)
    first = mixer.mixing_matrix(10, 10).clone()
    with torch.no_grad():
        mixer.random_matrix.copy_(torch.softmax(torch.rand(49, 49), -1))
    assert not torch.allclose(first, mixer.mixing_matrix(10, 10))


def test_a_mixer_made_under_inference_mode_resamples():
    with torch.inference_mode():
        mixer = RandomMixing(dim=4, num_tokens=49)
        out = mixer(torch.randn(1, 10, 12, 4))
    assert out.shape == (1, 10, 12, 4)
    torch.testing.assert_close(mixer.mixing_matrix(10, 12).sum(1), torch.ones(120))


def test_compiled_mixer_resamples_inside_the_graph():
    """Under ``torch.compile`` the resampling is part of the graph (no cache lookup, so no graph break) and gives
    the eager result."""
    mixer = RandomMixing(dim=4, num_tokens=49)
    x = torch.randn(2, 5, 6, 4)
    compiled = torch.compile(mixer, backend='eager', fullgraph=True)
    out = compiled(x)
    assert not mixer._cache  # the compiled graph resampled: it neither read nor filled the cache
    torch.testing.assert_close(out, mixer(x))


def test_while_compiling_the_mixer_resamples_without_the_cache(monkeypatch):
    """The branch that ``torch.compile`` traces, run eagerly with the compiler's flag set: a fresh resampling each
    call, the eager cache untouched."""
    mixer = RandomMixing(dim=4, num_tokens=49)
    eager = mixer.mixing_matrix(5, 6)
    cache = dict(mixer._cache)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    traced = mixer.mixing_matrix(5, 6)
    assert traced is not eager and mixer._cache == cache
    torch.testing.assert_close(traced, eager)


def test_mixer_needs_a_square_token_count_and_prints_its_grid():
    with pytest.raises(ValueError, match='RandomMixing needs a square token grid, got num_tokens=50'):
        RandomMixing(dim=4, num_tokens=50)
    assert repr(RandomMixing(dim=4, num_tokens=49)) == 'RandomMixing(num_tokens=49, base_grid=(7, 7))'


def test_randformer_trains_at_a_detection_size():
    model = mmf.RandFormer('s12', out_indices=(1, 2, 3)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    matrices = [b.token_mixer.random_matrix.clone() for b in model.stages[2].blocks]
    x = torch.randn(2, 3, 160, 240)  # stage grids 10x15 and 5x8, not the 14x14 and 7x7 of 224
    for _ in range(2):
        loss = sum(o.square().mean() for o in model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    for before, block in zip(matrices, model.stages[2].blocks):
        assert not block.token_mixer.random_matrix.requires_grad
        torch.testing.assert_close(before, block.token_mixer.random_matrix)  # frozen
