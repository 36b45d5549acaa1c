"""Captioning encoder and decoders: shapes, ImageNet loading, stepwise decoding, the penalty."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close

from glimpse.models.captioning import (
    CaptionEncoder,
    ShowAttendTell,
    ShowTell,
    doubly_stochastic_penalty,
)
from glimpse.models.recurrent import scratch_state_from_fused

V, D, E, H, A = 20, 16, 12, 32, 24
R, T, N = 3, 6, 5
DECODERS = {
    "show_tell-lstm-fused": lambda: ShowTell(V, D, "lstm", "fused", E, H),
    "show_tell-lstm-scratch": lambda: ShowTell(V, D, "lstm", "scratch", E, H),
    "show_tell-gru-fused": lambda: ShowTell(V, D, "gru", "fused", E, H),
    "show_tell-gru-scratch": lambda: ShowTell(V, D, "gru", "scratch", E, H),
    "attend-fused": lambda: ShowAttendTell(V, D, E, H, A, impl="fused"),
    "attend-scratch": lambda: ShowAttendTell(V, D, E, H, A, impl="scratch"),
    "attend-no-gate": lambda: ShowAttendTell(V, D, E, H, A, gate=False),
}


def _decoder(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DECODERS[name]().double().eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(R, N, D, generator=gen, dtype=torch.float64)
    words = torch.randint(0, V, (R, T), generator=gen)
    return grid, words


@pytest.mark.parametrize(
    ("small_images", "size", "grid_size", "shape"),
    [
        (True, (32, 32), None, (4, 4)),
        (True, (40, 24), None, (5, 3)),
        (False, (64, 64), None, (2, 2)),
        (False, (64, 96), None, (2, 3)),
        (True, (32, 32), 2, (2, 2)),
        (False, (64, 64), 3, (3, 3)),
    ],
)
def test_encoder_grid_shape(small_images, size, grid_size, shape):
    """The grid is (B, h*w, 512) for resnet18 and grid_shape predicts (h, w)."""
    torch.manual_seed(0)
    encoder = CaptionEncoder("resnet18", small_images=small_images, grid_size=grid_size).eval()
    with torch.no_grad():
        grid = encoder(torch.randn(2, 3, *size))
    assert encoder.out_dim == 512
    assert encoder.grid_shape(size) == shape
    assert grid.shape == (2, shape[0] * shape[1], 512)


def test_encoder_grid_size_is_the_average_of_the_trunk_map():
    """With grid_size, each grid cell is the mean of its block of the unpooled map."""
    torch.manual_seed(0)
    pooled = CaptionEncoder("resnet18", small_images=True, grid_size=2).eval()
    full = CaptionEncoder("resnet18", small_images=True).eval()
    full.load_state_dict(pooled.state_dict())
    with torch.no_grad():
        images = torch.randn(1, 3, 32, 32)
        blocks = full(images).view(1, 2, 2, 2, 2, 512).mean(dim=(2, 4))
        assert_close(pooled(images), blocks.reshape(1, 4, 512))


def test_load_imagenet_state_reproduces_torchvision_trunk():
    """A torchvision resnet18 state dict loads and the grid is its layer4 map, flattened."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    reference.eval()
    encoder = CaptionEncoder("resnet18")
    encoder.load_imagenet_state(reference.state_dict())
    encoder.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = images
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(reference, name)(x)
        assert_close(encoder(images), x.flatten(2).transpose(1, 2))


def test_load_imagenet_state_rejects_another_stem():
    """The 7x7 ImageNet stem does not fit the small-image stem; the error says what to do."""
    encoder = CaptionEncoder("resnet18", small_images=True)
    with pytest.raises(ValueError, match="small_images=false"):
        encoder.load_imagenet_state(torchvision.models.resnet18().state_dict())


def test_attention_is_a_distribution_over_the_grid():
    """Soft-attention weights are positive and sum to 1 over the N cells; 0 < β < 1."""
    decoder = _decoder("attend-fused")
    grid, words = _inputs()
    out = decoder(grid, words)
    assert out.attention.shape == (R, T, N)
    assert out.gates.shape == (R, T)
    assert (out.attention > 0).all()
    assert_close(out.attention.sum(-1), torch.ones(R, T, dtype=torch.float64))
    assert ((out.gates > 0) & (out.gates < 1)).all()
    assert _decoder("attend-no-gate")(grid, words).gates is None
    assert _decoder("show_tell-lstm-fused")(grid, words).attention is None


@pytest.mark.parametrize("name", list(DECODERS))
def test_forward_equals_stepwise_decoding(name):
    """Teacher forcing gives the logits (and attention) of T calls to step()."""
    decoder = _decoder(name)
    grid, words = _inputs()
    out = decoder(grid, words)
    assert out.logits.shape == (R, T, V)
    memory = decoder.prepare(grid)
    state = decoder.init_state(memory)
    logits, maps = [], []
    for t in range(T):
        step_logits, state, attention = decoder.step(words[:, t], state, memory)
        logits.append(step_logits)
        maps.append(attention)
    assert_close(out.logits, torch.stack(logits, dim=1))
    if decoder.uses_attention:
        assert_close(out.attention, torch.stack(maps, dim=1))
    else:
        assert all(m is None for m in maps)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_show_tell_scratch_matches_fused_with_mapped_weights(cell):
    """The scratch cells compute the torch.nn.LSTM/GRU decoder once its weights are mapped."""
    fused = _decoder(f"show_tell-{cell}-fused")
    scratch = _decoder(f"show_tell-{cell}-scratch", seed=5)
    fused_state = fused.state_dict()
    recurrent = {
        key.removeprefix("recurrent."): value
        for key, value in fused_state.items()
        if key.startswith("recurrent.")
    }
    mapped = {
        key.replace("cells.0.", "recurrent."): value
        for key, value in scratch_state_from_fused(recurrent, cell, 1).items()
    }
    others = {k: v for k, v in fused_state.items() if not k.startswith("recurrent.")}
    scratch.load_state_dict({**others, **mapped})
    grid, words = _inputs()
    assert_close(scratch(grid, words).logits, fused(grid, words).logits)


def test_attend_scratch_cell_matches_torch_lstm_cell():
    """ShowAttendTell with the lecture's LSTMCell equals the torch.nn.LSTMCell version."""
    fused = _decoder("attend-fused")
    scratch = _decoder("attend-scratch", seed=5)
    fused_state = fused.state_dict()
    recurrent = {
        f"{key.removeprefix('recurrent.')}_l0": value
        for key, value in fused_state.items()
        if key.startswith("recurrent.")
    }
    mapped = {
        key.replace("cells.0.", "recurrent."): value
        for key, value in scratch_state_from_fused(recurrent, "lstm", 1).items()
    }
    others = {k: v for k, v in fused_state.items() if not k.startswith("recurrent.")}
    scratch.load_state_dict({**others, **mapped})
    grid, words = _inputs()
    expected, got = fused(grid, words), scratch(grid, words)
    assert_close(got.logits, expected.logits)
    assert_close(got.attention, expected.attention)
    assert_close(got.gates, expected.gates)


@pytest.mark.parametrize("name", list(DECODERS))
def test_later_words_do_not_change_earlier_outputs(name):
    """Replacing the inputs after step k (e.g. by padding) leaves steps 0..k unchanged."""
    decoder = _decoder(name)
    grid, words = _inputs()
    padded = words.clone()
    padded[:, 3:] = 0
    out, out_padded = decoder(grid, words), decoder(grid, padded)
    assert_close(out_padded.logits[:, :3], out.logits[:, :3])
    assert not torch.allclose(out_padded.logits[:, 3:], out.logits[:, 3:])
    if decoder.uses_attention:
        assert_close(out_padded.attention[:, :4], out.attention[:, :4])


def test_doubly_stochastic_penalty_matches_a_loop():
    """Σ_i (1 - Σ_{t unmasked} a_ti)² per caption, against explicit loops."""
    gen = torch.Generator().manual_seed(0)
    attention = torch.rand(R, T, N, generator=gen, dtype=torch.float64).softmax(-1)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(T) < lengths.unsqueeze(1)
    expected = torch.zeros(R, dtype=torch.float64)
    for r in range(R):
        for i in range(N):
            total = sum(attention[r, t, i] for t in range(T) if mask[r, t])
            expected[r] += (1 - total) ** 2
    assert_close(doubly_stochastic_penalty(attention, mask), expected)


@pytest.mark.parametrize("name", list(DECODERS))
def test_gradients_reach_every_parameter(name):
    """Cross-entropy (plus the attention penalty) gives every parameter a non-zero gradient."""
    decoder = _decoder(name).train()
    grid, words = _inputs()
    out = decoder(grid, words)
    targets = torch.randint(0, V, (R, T), generator=torch.Generator().manual_seed(2))
    loss = nn.functional.cross_entropy(out.logits.reshape(-1, V), targets.reshape(-1))
    if out.attention is not None:
        loss = loss + doubly_stochastic_penalty(out.attention, targets > 0).mean()
    loss.backward()
    for param_name, param in decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_three_stage_encoder_stops_at_layer3_with_a_grid_twice_as_fine():
    """stages=3 gives torchvision's layer3 map (H/16) and loads ImageNet weights minus layer4."""
    reference = torchvision.models.resnet18().eval()
    encoder = CaptionEncoder("resnet18", stages=3).eval()
    encoder.load_imagenet_state(reference.state_dict())
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        grid = encoder(images)
        x = images
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            x = getattr(reference, name)(x)
    assert encoder.out_dim == 256 and encoder.grid_shape((64, 48)) == (4, 3)
    torch.testing.assert_close(grid, x.flatten(2).transpose(1, 2))
    assert not any(key.startswith("layer4") for key in encoder.state_dict())
