"""open_clip -> glimpse CLIP: equal embeddings for ViT and modified-ResNet towers (shrunk and
the real ViT-B-32 and RN50 shapes, random weights, nothing downloaded), key handling, refusals."""

from __future__ import annotations

import open_clip
import pytest
import torch
from conftest import random_images, randomize_parameters
from open_clip.transformer import QuickGELU as OpenClipQuickGELU
from torch import nn
from torch.testing import assert_close

from glimpse.models.clip import clip_rn50, clip_vit_b32
from glimpse.models.convert.open_clip import (
    clip_from_open_clip,
    clip_from_open_clip_state,
    clip_kwargs_from_open_clip_state,
    convert_open_clip_state_dict,
)
from glimpse.models.layers import QuickGELU

VOCAB, CONTEXT = 100, 16
SHRUNK_TEXT = dict(context_length=CONTEXT, vocab_size=VOCAB, width=64, heads=2, layers=2)
SHRUNK_VISION = {
    "vit": dict(image_size=64, layers=2, width=64, patch_size=16, head_width=32),
    "resnet": dict(image_size=64, layers=[1, 2, 1, 1], width=16, head_width=32),
}


def randomize(model: nn.Module, seed: int, std: float) -> nn.Module:
    """Every parameter random (conftest's randomize_parameters), and BatchNorm weights near 1
    with random running statistics, so that every converted tensor changes the output."""
    randomize_parameters(model, seed, std)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.add_(1.0)
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


def clip_like_tokens(vocab: int, context: int) -> torch.Tensor:
    """Two rows as CLIP's tokenizer writes them: start ``vocab - 2``, words, end ``vocab - 1``
    (the largest id), zero padding; the second row is cut at the context length."""
    tokens = torch.zeros(2, context, dtype=torch.long)
    tokens[0, :5] = torch.tensor([vocab - 2, 5, 6, 7, vocab - 1])
    tokens[1] = torch.randint(3, vocab - 2, (context,), generator=torch.Generator().manual_seed(0))
    tokens[1, 0], tokens[1, -1] = vocab - 2, vocab - 1
    return tokens


def assert_same_model(theirs: nn.Module, ours: nn.Module, images, tokens) -> None:
    with torch.no_grad():
        assert_close(ours.encode_image(images), theirs.encode_image(images), atol=1e-4, rtol=1e-4)
        assert_close(ours.encode_text(tokens), theirs.encode_text(tokens), atol=1e-4, rtol=1e-4)
        for mine, reference in zip(ours(images, tokens), theirs(images, tokens), strict=True):
            assert_close(mine, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("quick_gelu", [False, True])
@pytest.mark.parametrize("tower", ["vit", "resnet"])
def test_shrunk_open_clip_models_give_the_same_embeddings(tower, quick_gelu):
    torch.manual_seed(0)
    theirs = open_clip.model.CLIP(
        32, SHRUNK_VISION[tower], SHRUNK_TEXT, quick_gelu=quick_gelu, init_logit_scale=2.0
    )
    randomize(theirs, seed=1, std=0.1)
    ours = clip_from_open_clip(theirs).eval()
    assert ours.vocab_size == VOCAB and ours.context_length == CONTEXT and ours.embed_dim == 32
    act = ours.text.blocks[0].mlp.act
    assert isinstance(act, QuickGELU) if quick_gelu else isinstance(act, nn.GELU)
    assert_same_model(theirs, ours, random_images(64, 64), clip_like_tokens(VOCAB, CONTEXT))


@pytest.mark.parametrize("name,preset", [("ViT-B-32", clip_vit_b32), ("RN50", clip_rn50)])
def test_full_size_open_clip_models_give_the_same_embeddings(name, preset):
    """The real configs (random weights: no download) on texts from CLIP's own tokenizer, and
    our preset has exactly the converted model's tensors."""
    torch.manual_seed(0)
    theirs = randomize(open_clip.create_model(name), seed=2, std=0.02)
    ours = clip_from_open_clip(theirs).eval()
    tokens = open_clip.get_tokenizer(name)(["a photo of a cat.", "a diagram"])
    assert tokens.shape == (2, 77)
    assert torch.equal(ours.text.end_positions(tokens), tokens.argmax(dim=-1))
    assert_same_model(theirs, ours, random_images(224, 224, batch=1), tokens)
    with torch.device("meta"):
        preset_model = preset()
    preset_shapes = {k: v.shape for k, v in preset_model.state_dict().items()}
    assert preset_shapes == {k: v.shape for k, v in ours.state_dict().items()}


def test_openai_style_state_dict_from_a_file_converts(tmp_path):
    """OpenAI's checkpoints carry setting entries and training checkpoints a ``module.``
    prefix under ``state_dict``; both load through ``torch.load(weights_only=True)``."""
    torch.manual_seed(0)
    theirs = open_clip.model.CLIP(32, SHRUNK_VISION["vit"], SHRUNK_TEXT, quick_gelu=True)
    randomize(theirs, seed=3, std=0.1)
    state = dict(theirs.state_dict())
    settings = {"input_resolution": 64, "context_length": CONTEXT, "vocab_size": VOCAB}
    path = tmp_path / "openai.pt"
    torch.save({**state, **{k: torch.tensor(v) for k, v in settings.items()}}, path)
    ours = clip_from_open_clip_state(
        torch.load(path, weights_only=True), quick_gelu=True, vision_heads=2, text_heads=2
    ).eval()
    assert_same_model(theirs, ours, random_images(64, 64), clip_like_tokens(VOCAB, CONTEXT))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    assert convert_open_clip_state_dict(wrapped).keys() == ours.state_dict().keys()


@pytest.mark.parametrize("tower", ["vit", "resnet"])
def test_shapes_are_read_from_the_state_dict(tower):
    theirs = open_clip.model.CLIP(32, SHRUNK_VISION[tower], SHRUNK_TEXT)
    kwargs = clip_kwargs_from_open_clip_state(theirs.state_dict(), quick_gelu=False)
    expected_vision = {
        "vit": dict(kind="vit", image_size=64, patch_size=16, width=64, layers=2, heads=1),
        "resnet": dict(kind="modified_resnet", image_size=64, layers=(1, 2, 1, 1), width=16),
    }[tower]
    assert kwargs["vision"].items() >= expected_vision.items()
    assert (kwargs["vocab_size"], kwargs["context_length"], kwargs["embed_dim"]) == (100, 16, 32)
    assert (kwargs["text_width"], kwargs["text_layers"], kwargs["text_mlp_ratio"]) == (64, 2, 4.0)


def test_unknown_keys_are_refused_by_name():
    state = open_clip.model.CLIP(32, SHRUNK_VISION["vit"], SHRUNK_TEXT).state_dict()
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)
    with pytest.raises(KeyError, match=r"resblocks\.0\.ls_1\.gamma"):
        convert_open_clip_state_dict(state)


def test_models_computing_something_else_are_refused():
    vision = {**SHRUNK_VISION["vit"], "pool_type": "avg"}
    with pytest.raises(ValueError, match="image pooling 'avg'"):
        clip_from_open_clip(open_clip.model.CLIP(32, vision, SHRUNK_TEXT))
    text = {**SHRUNK_TEXT, "pool_type": "last"}
    with pytest.raises(ValueError, match="text pooling 'last'"):
        clip_from_open_clip(open_clip.model.CLIP(32, SHRUNK_VISION["vit"], text))


def test_quick_gelu_is_detected_from_the_model():
    theirs = open_clip.model.CLIP(32, SHRUNK_VISION["resnet"], SHRUNK_TEXT, quick_gelu=True)
    assert isinstance(theirs.transformer.resblocks[0].mlp.gelu, OpenClipQuickGELU)
    assert isinstance(clip_from_open_clip(theirs).text.blocks[0].mlp.act, QuickGELU)
