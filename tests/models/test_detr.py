"""DETR: shapes on a padded batch, the padding mask, sine positions, the SDPA attention against
torch.nn.MultiheadAttention, ImageNet loading, frozen parts and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close
from torchvision.ops.misc import FrozenBatchNorm2d

from glimpse.batches import DetectionTarget
from glimpse.models.detr import (
    Attention,
    Backbone,
    DecoderLayer,
    EncoderLayer,
    PositionEmbeddingSine,
    detr_r50,
    detr_small,
)
from glimpse.models.detr_loss import SetCriterion
from glimpse.models.matcher import HungarianMatcher

NUM_CLASSES = 5


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A 64x96 image and a 40x64 one zero-padded to 64x96."""
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, 40:] = True
    mask[1, :, 64:] = True
    images[mask[:, None].expand_as(images)] = 0
    return images, mask


def _feature_mask() -> torch.Tensor:
    """A (2, 4, 5) feature-map mask: image 1 has its last row and last two columns padded."""
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[1, 3:] = True
    mask[1, :, 3:] = True
    return mask


def test_forward_shapes_on_a_padded_batch():
    """detr_small: logits (B, 30, C+1), boxes (B, 30, 4) in (0, 1), one auxiliary layer, and
    the mask downsampled to the 2x3 feature map by nearest neighbour."""
    torch.manual_seed(0)
    model = detr_small(NUM_CLASSES).eval()
    images, mask = _padded_batch()
    with torch.no_grad():
        features, small_mask = model.backbone(images, mask)
        output = model(images, mask)
    assert features.shape == (2, 512, 2, 3)
    expected_mask = torch.tensor([[False, False, True], [False, False, True]])
    assert not small_mask[0].any()
    assert torch.equal(small_mask[1], expected_mask)
    assert output.logits.shape == (2, 30, NUM_CLASSES + 1)
    assert output.boxes.shape == (2, 30, 4)
    assert ((output.boxes > 0) & (output.boxes < 1)).all()
    assert len(output.aux) == 1
    assert output.aux[0][0].shape == output.logits.shape
    assert output.aux[0][1].shape == output.boxes.shape
    assert detr_small(NUM_CLASSES, aux_loss=False).eval()(images, mask).aux == []


def test_detection_ignores_padded_features():
    """Given the feature map, the transformer, positions and heads do not depend on features
    at padded cells (changing them leaves the outputs equal), but do on valid cells."""
    torch.manual_seed(0)
    model = detr_small(NUM_CLASSES).eval()
    mask = _feature_mask()
    features = torch.randn(2, 512, 4, 5)
    changed = features.clone()
    changed[mask[:, None].expand_as(features)] = 100 * torch.randn(int(mask.sum()) * 512)
    with torch.no_grad():
        reference, padded_changed = model.detect(features, mask), model.detect(changed, mask)
        features[1, :, 0, 0] += 1
        valid_changed = model.detect(features, mask)
    assert_close(padded_changed.logits, reference.logits)
    assert_close(padded_changed.boxes, reference.boxes)
    assert_close(padded_changed.aux[0][0], reference.aux[0][0])
    assert not torch.allclose(valid_changed.logits[1], reference.logits[1])
    assert_close(valid_changed.logits[0], reference.logits[0])


def test_attention_gives_padded_keys_zero_weight():
    """The gradient of the output with respect to padded keys and values is exactly zero (they
    get zero attention weight) and nonzero for valid ones."""
    torch.manual_seed(0)
    attention = Attention(16, 4).double()
    query = torch.randn(2, 3, 16, dtype=torch.float64)
    key = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False] * 5, [False, False, True, False, True]])
    attention(query, key, value, padding).square().sum().backward()
    for grad in (key.grad, value.grad):
        assert (grad[padding] == 0).all()
        assert (grad[~padding].abs().sum(-1) > 0).all()


def _reference_positions(mask: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    """DETR's sine positions written out cell by cell."""
    batch, height, width = mask.shape
    out = torch.empty(batch, 2 * num_pos_feats, height, width, dtype=torch.float64)
    for b in range(batch):
        valid = ~mask[b]
        for i in range(height):
            for j in range(width):
                y = valid[: i + 1, j].sum().item() / (valid[:, j].sum().item() + 1e-6)
                x = valid[i, : j + 1].sum().item() / (valid[i].sum().item() + 1e-6)
                for k in range(num_pos_feats):
                    period = 10000 ** (2 * (k // 2) / num_pos_feats)
                    wave = math.sin if k % 2 == 0 else math.cos
                    out[b, k, i, j] = wave(2 * math.pi * y / period)
                    out[b, num_pos_feats + k, i, j] = wave(2 * math.pi * x / period)
    return out


def test_position_embedding_equals_detr_formula():
    """PE(y)_{2i} = sin(ŷ / 10000^{2i/F}), PE(y)_{2i+1} = cos(...), ŷ the valid-row count
    normalised to (0, 2π], then the same for x, on a padded mask."""
    mask = _feature_mask()
    positions = PositionEmbeddingSine(num_pos_feats=6)(mask)
    assert positions.shape == (2, 12, 4, 5)
    assert positions.dtype == torch.float32
    assert_close(positions.double(), _reference_positions(mask, 6), atol=1e-5, rtol=0)


def _multihead_attention(attention: Attention) -> nn.MultiheadAttention:
    """A torch.nn.MultiheadAttention with ``attention``'s weights."""
    d_model = attention.out_proj.in_features
    reference = nn.MultiheadAttention(d_model, attention.nhead, batch_first=True)
    reference = reference.double().eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.in_proj.weight)
        reference.in_proj_bias.copy_(attention.in_proj.bias)
        reference.out_proj.weight.copy_(attention.out_proj.weight)
        reference.out_proj.bias.copy_(attention.out_proj.bias)
    return reference


def _randomise_biases(module: nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.normal_()


def test_encoder_layer_equals_multihead_attention_computation():
    """The post-norm encoder layer is LN(x + MHA(x + p, x + p, x, mask)) then
    LN(x + FFN(x)) with torch.nn.MultiheadAttention holding the same weights."""
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, dropout=0.1).double().eval()
    _randomise_biases(layer)
    mha = _multihead_attention(layer.self_attn)
    src, pos = torch.randn(2, 2, 7, 16, dtype=torch.float64)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.no_grad():
        attended = mha(src + pos, src + pos, src, key_padding_mask=padding, need_weights=False)
        x = layer.norm1(src + attended[0])
        expected = layer.norm2(x + layer.ffn(x))
        assert_close(layer(src, pos, padding), expected)


def test_decoder_layer_equals_multihead_attention_computation():
    """The post-norm decoder layer: self-attention over queries with query positions added to
    queries and keys, cross-attention to the memory with positions on its keys, FFN."""
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.1).double().eval()
    _randomise_biases(layer)
    self_mha = _multihead_attention(layer.self_attn)
    cross_mha = _multihead_attention(layer.cross_attn)
    tgt, query_pos = torch.randn(2, 2, 3, 16, dtype=torch.float64)
    memory, pos = torch.randn(2, 2, 7, 16, dtype=torch.float64)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 5:] = True
    with torch.no_grad():
        qk = tgt + query_pos
        x = layer.norm1(tgt + self_mha(qk, qk, tgt, need_weights=False)[0])
        read = cross_mha(x + query_pos, memory + pos, memory, key_padding_mask=padding)[0]
        x = layer.norm2(x + read)
        expected = layer.norm3(x + layer.ffn(x))
        assert_close(layer(tgt, query_pos, memory, pos, padding), expected)


def test_load_imagenet_state_reproduces_torchvision_trunk():
    """A torchvision resnet50 state dict (random weights and BatchNorm statistics) loads, and
    the backbone's map is torchvision's layer4 output with BatchNorm in eval mode."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    backbone = Backbone("resnet50")
    backbone.load_imagenet_state(reference.state_dict())
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        trunk = nn.Sequential(*list(reference.children())[:-2]).double()
        features, mask = backbone.double()(images, torch.zeros(1, 64, 64, dtype=torch.bool))
        assert_close(features, trunk(images))
    assert backbone.num_channels == 2048
    assert mask.shape == (1, 2, 2)


def test_load_imagenet_state_rejects_another_arch():
    """resnet18 weights don't fit a resnet50 backbone."""
    with pytest.raises(ValueError, match="same arch"):
        Backbone("resnet50").load_imagenet_state(torchvision.models.resnet18().state_dict())


def test_a_backbone_from_scratch_has_batch_statistics_and_trains_whole():
    """from_scratch: ordinary BatchNorm updated by training batches, every parameter trained,
    and torchvision's state dict (with num_batches_tracked) still loads."""
    model = detr_small(NUM_CLASSES, from_scratch=True)
    backbone = model.backbone
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    assert all(p.requires_grad for p in model.parameters())
    backbone.train()
    before = backbone.bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool))
    assert not torch.equal(before, backbone.bn1.running_mean)
    reference = torchvision.models.resnet18()
    backbone.load_imagenet_state(reference.state_dict())
    assert_close(backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


@pytest.mark.parametrize("train_backbone", [True, False])
def test_frozen_parts_of_the_backbone(train_backbone):
    """BatchNorm holds no parameters; the stem and layer1 are always frozen, layer2..4 train
    with train_backbone; everything outside the backbone trains."""
    model = detr_small(NUM_CLASSES, train_backbone=train_backbone)
    batch_norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert batch_norms and all(not list(m.parameters()) for m in batch_norms)
    for name, parameter in model.named_parameters():
        if not name.startswith("backbone."):
            assert parameter.requires_grad, name
        elif name.startswith(("backbone.layer2", "backbone.layer3", "backbone.layer4")):
            assert parameter.requires_grad == train_backbone, name
        else:
            assert not parameter.requires_grad, name


def test_gradients_reach_every_trainable_parameter():
    """One set-criterion backward step (train mode) gives every trainable parameter a nonzero
    gradient, none to the frozen stem and layer1, and leaves frozen BatchNorm unchanged.

    Biases are perturbed first: the first decoder layer's self-attention sees all-zero inputs,
    so every value is its bias b_v and, while b_v = 0 (as initialised), that attention's
    projections and the norm after it get no gradient (as in DETR)."""
    torch.manual_seed(0)
    model = detr_small(NUM_CLASSES).train()
    _randomise_biases(model.transformer)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "bn" in k}
    images, mask = _padded_batch()
    targets = [
        DetectionTarget(
            torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.2, 0.3, 0.1, 0.2]]), torch.tensor([1, 4])
        ),
        DetectionTarget(torch.tensor([[0.4, 0.6, 0.3, 0.3]]), torch.tensor([0])),
    ]
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    criterion(model(images, mask), targets)["loss"].backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    for key, value in model.backbone.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), key


def test_detr_r50_is_the_paper_configuration():
    """ResNet-50, 6 + 6 layers, d = 256, 100 queries, 41M parameters (the paper's count)."""
    model = detr_r50(91)
    assert model.backbone.arch == "resnet50"
    assert len(model.transformer.encoder) == len(model.transformer.decoder) == 6
    assert model.query_embed.weight.shape == (100, 256)
    assert model.class_embed.out_features == 92
    assert 41.0e6 < sum(p.numel() for p in model.parameters()) < 42.0e6


def test_backbone_rejects_a_non_resnet():
    """Only ResNet-family torchvision names make a backbone."""
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        Backbone("vit_b_16")
