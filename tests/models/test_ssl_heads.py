"""BYOL's MLP head and DINO's head: layers, sizes, the weight-normalised last layer against a
manual computation and against DINO's own head (deprecated ``nn.utils.weight_norm``)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from glimpse.models.ssl_heads import DINOHead, MLPHead


class ReferenceDINOHead(nn.Module):
    """DINO's ``DINOHead`` (facebookresearch/dino, vision_transformer.py) as written there:
    ``nn.utils.weight_norm`` on the last layer, ``weight_g`` filled with 1 and frozen."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def test_mlp_head_is_linear_batchnorm_relu_linear_with_byol_sizes():
    head = MLPHead(32)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.net[0].out_features == 4096 and head.net[3].out_features == 256
    assert head(torch.randn(4, 32)).shape == (4, 256)


def test_mlp_head_forward_equals_its_layers_by_hand():
    torch.manual_seed(0)
    head = MLPHead(8, hidden_dim=16, out_dim=4).train()
    x = torch.randn(5, 8)
    hidden = head.net[0](x)
    normed = (hidden - hidden.mean(0)) / torch.sqrt(hidden.var(0, unbiased=False) + 1e-5)
    expected = head.net[3](F.relu(normed * head.net[1].weight + head.net[1].bias))
    assert_close(head(x), expected)


def test_dino_head_layers_and_default_sizes():
    head = DINOHead(384)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert [m.out_features for m in head.mlp if isinstance(m, nn.Linear)] == [2048, 2048, 256]
    weight = head.last_layer.parametrizations.weight
    assert weight.original0.shape == (65536, 1) and weight.original1.shape == (65536, 256)
    assert head.last_layer.bias is None


def test_dino_head_with_batchnorm_and_one_layer():
    with_bn = DINOHead(16, out_dim=8, hidden_dim=12, bottleneck_dim=6, use_bn=True)
    kinds = [type(m) for m in with_bn.mlp]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.GELU] * 2 + [nn.Linear]
    single = DINOHead(16, out_dim=8, bottleneck_dim=6, num_layers=1)
    assert [type(m) for m in single.mlp] == [nn.Linear]
    assert single(torch.randn(3, 16)).shape == (3, 8)
    with pytest.raises(ValueError, match="num_layers=0"):
        DINOHead(16, num_layers=0)


def test_dino_head_mlp_init_is_normal_002_with_zero_bias():
    torch.manual_seed(0)
    head = DINOHead(256, out_dim=64, hidden_dim=512, bottleneck_dim=128)
    for layer in (m for m in head.mlp if isinstance(m, nn.Linear)):
        assert torch.all(layer.bias == 0)
        # DINO's trunc_normal_(std=.02) cuts at +-2 (absolute), far out: a plain N(0, 0.02).
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert layer.weight.mean().abs().item() < 0.002


def test_dino_head_logits_are_cosines_to_the_prototypes_by_hand():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    x = torch.randn(4, 16)
    direction = head.last_layer.parametrizations.weight.original1
    prototypes = direction / direction.norm(dim=1, keepdim=True)
    expected = F.normalize(head.mlp(x), dim=-1) @ prototypes.T
    assert_close(head(x), expected)
    assert head(x).abs().max() <= 1.0 + 1e-6
    assert_close(head.last_layer.weight.norm(dim=1), torch.ones(10))


def test_dino_head_equals_dinos_reference_head_with_the_same_weights():
    torch.manual_seed(0)
    ours = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    reference = ReferenceDINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    reference.mlp.load_state_dict(ours.mlp.state_dict())
    weight = ours.last_layer.parametrizations.weight
    with torch.no_grad():
        reference.last_layer.weight_v.copy_(weight.original1)
    x = torch.randn(5, 16, requires_grad=True)
    assert_close(ours(x), reference(x))
    ours(x).square().sum().backward()
    ours_grad = weight.original1.grad.clone()
    reference(x).square().sum().backward()
    assert_close(ours_grad, reference.last_layer.weight_v.grad)


def test_norm_last_layer_freezes_the_magnitudes_at_one():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    weight = head.last_layer.parametrizations.weight
    assert not weight.original0.requires_grad and weight.original1.requires_grad
    optimizer = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(4, 16)).square().sum().backward()
    optimizer.step()
    assert torch.all(weight.original0 == 1.0)
    assert weight.original1.grad is not None and weight.original1.grad.abs().sum() > 0
    free = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_dino_head_deep_copies_and_round_trips_its_state_dict():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    teacher = copy.deepcopy(head)
    x = torch.randn(3, 16)
    assert_close(teacher(x), head(x))
    state = head.state_dict()
    assert "last_layer.parametrizations.weight.original0" in state
    torch.manual_seed(1)
    fresh = DINOHead(16, out_dim=10, hidden_dim=12, bottleneck_dim=6)
    fresh.load_state_dict(state)
    assert_close(fresh(x), head(x))
