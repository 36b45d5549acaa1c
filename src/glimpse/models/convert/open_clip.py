"""open_clip ``CLIP`` models and state dicts (``ViT-B-32``, ``RN50`` and the other plain ViT
and modified-ResNet shapes, OpenAI's released weights included) -> glimpse's
:class:`~glimpse.models.clip.CLIP`.

Both compute the same function: pre-norm blocks with LayerNorm ``eps=1e-5``, GELU or QuickGELU
(OpenAI's weights need ``quick_gelu=True``), fused query/key/value projections in the same
order (``nn.MultiheadAttention``'s ``in_proj_weight`` is our ``qkv`` Linear), CLIP's ``ln_pre``
and bias-free patch projection, the class token's final LayerNorm, the causal text Transformer
read at the end token, and the bias-free projections. Tensors are renamed, except four that
change layout: the class token ``(D,) -> (1, 1, D)``, the image position table ``(1 + N, D)
-> (1, 1 + N, D)``, and the two projections, which open_clip applies as ``x @ P`` and glimpse
as Linear layers (``weight = P^T``).

OpenAI's checkpoints also hold ``input_resolution``, ``context_length`` and ``vocab_size``
entries (dropped) and training checkpoints a ``state_dict`` with a ``module.`` prefix
(unwrapped). Anything else without a counterpart (layer scale, attentional poolers, a logit
bias, timm or Hugging Face towers) is refused by name.

The text end token: open_clip reads the features at the position of the largest token id;
glimpse at the last token that is not padding. They agree for CLIP's tokenizer, whose end
token is the largest id and is followed by padding (0) only.

Usage with downloaded weights (never fetched here)::

    state = torch.load("ViT-B-32-openai.pt", weights_only=True)   # an open_clip state dict
    model = clip_from_open_clip_state(state, quick_gelu=True)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from glimpse.models.clip import CLIP
from glimpse.models.convert import rename_key

if TYPE_CHECKING:
    from open_clip import CLIP as OpenClipCLIP

_BLOCK_PARTS = [
    (r"ln_1\.(weight|bias)", r"norm1.\2"),
    (r"attn\.in_proj_(weight|bias)", r"attn.qkv.\2"),
    (r"attn\.out_proj\.(weight|bias)", r"attn.proj.\2"),
    (r"ln_2\.(weight|bias)", r"norm2.\2"),
    (r"mlp\.c_fc\.(weight|bias)", r"mlp.fc1.\2"),
    (r"mlp\.c_proj\.(weight|bias)", r"mlp.fc2.\2"),
]
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _blocks(source: str, target: str) -> list[tuple[str, str]]:
    """The entries of a Transformer's blocks, under ``source`` (a regex whose one group is the
    block index) in open_clip and under ``target`` (``\\1``, the index) in glimpse."""
    return [(source + part, target + name) for part, name in _BLOCK_PARTS]


def _compile(entries: list[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern), target) for pattern, target in entries]


_VIT_MAP = _compile(
    [
        (r"visual\.conv1\.weight", "visual.trunk.patch_embed.proj.weight"),
        (r"visual\.class_embedding", "visual.trunk.cls_token"),
        (r"visual\.positional_embedding", "visual.trunk.pos_embed"),
        (r"visual\.ln_pre\.(weight|bias)", r"visual.trunk.norm_pre.\1"),
        *_blocks(r"visual\.transformer\.resblocks\.(\d+)\.", r"visual.trunk.blocks.\1."),
        (r"visual\.ln_post\.(weight|bias)", r"visual.trunk.norm.\1"),
        (r"visual\.proj", "visual.proj.weight"),
    ]
)
#: The modified ResNet keeps open_clip's names but for the shortcut's.
_RESNET_MAP = _compile(
    [
        (rf"visual\.(conv[123]\.weight|bn[123]\.{_BN})", r"visual.\1"),
        (rf"(visual\.layer[1-4]\.\d+\.)(conv[123]\.weight|bn[123]\.{_BN})", r"\1\2"),
        (r"(visual\.layer[1-4]\.\d+\.downsample\.)0\.weight", r"\1conv.weight"),
        (rf"(visual\.layer[1-4]\.\d+\.downsample\.)1\.{_BN}", r"\1bn.\2"),
        (r"visual\.attnpool\.positional_embedding", "visual.attnpool.positional_embedding"),
        (r"visual\.attnpool\.([qkvc]_proj)\.(weight|bias)", r"visual.attnpool.\1.\2"),
    ]
)
_TEXT_MAP = _compile(
    [
        (r"token_embedding\.weight", "text.token_embedding.weight"),
        (r"positional_embedding", "text.positional_embedding"),
        *_blocks(r"transformer\.resblocks\.(\d+)\.", r"text.blocks.\1."),
        (r"ln_final\.(weight|bias)", r"text.ln_final.\1"),
        (r"text_projection", "text.proj.weight"),
        (r"logit_scale", "logit_scale"),
    ]
)
_LAYOUT: dict[str, Callable[[Tensor], Tensor]] = {
    "visual.class_embedding": lambda t: t.reshape(1, 1, -1),
    "visual.positional_embedding": lambda t: t.unsqueeze(0),
    "visual.proj": lambda t: t.t(),
    "text_projection": lambda t: t.t(),
}
#: Entries of OpenAI's checkpoints that hold settings, not tensors of the model.
_SETTINGS = ("input_resolution", "context_length", "vocab_size")


def _unwrap(state: dict[str, Any]) -> dict[str, Tensor]:
    """The model's tensors: a training checkpoint's ``state_dict`` without its ``module.``
    prefix, without OpenAI's setting entries."""
    if "state_dict" in state:
        state = state["state_dict"]
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if key not in _SETTINGS}


def _map_key(key: str, vit: bool) -> str:
    renamed = rename_key(key, _TEXT_MAP + (_VIT_MAP if vit else _RESNET_MAP))
    if renamed is not None:
        return renamed
    raise KeyError(
        f"open_clip key {key!r} has no glimpse counterpart (only CLIP models with a plain ViT "
        f"or modified-ResNet image tower and open_clip's text Transformer are supported)."
    )


def convert_open_clip_state_dict(state: dict[str, Any]) -> dict[str, Tensor]:
    """Rename (and re-lay-out, see the module docstring) an open_clip ``CLIP`` state dict,
    ViT or modified-ResNet, to :class:`~glimpse.models.clip.CLIP`'s.

    Tensors are shared where the layout does not change. An unknown key raises ``KeyError``
    naming it.
    """
    state = _unwrap(state)
    vit = "visual.class_embedding" in state
    return {
        _map_key(key, vit): _LAYOUT.get(key, lambda t: t)(value) for key, value in state.items()
    }


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({match[1] for key in state if (match := pattern.match(key))})


def clip_kwargs_from_open_clip_state(
    state: dict[str, Any],
    quick_gelu: bool,
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> dict[str, Any]:
    """The :class:`~glimpse.models.clip.CLIP` arguments of the model an open_clip state dict
    comes from, read from its tensor shapes as OpenAI's ``build_model`` does.

    Head counts are not in the tensors: by default ``width / 64`` as for every OpenAI and
    open_clip model (the modified ResNet's pool: ``32 width / 64``).
    """
    state = _unwrap(state)
    text_width = state["ln_final.weight"].shape[0]
    kwargs: dict[str, Any] = {
        "vocab_size": state["token_embedding.weight"].shape[0],
        "context_length": state["positional_embedding"].shape[0],
        "embed_dim": state["text_projection"].shape[1],
        "text_width": text_width,
        "text_layers": _count_blocks(state, "transformer.resblocks."),
        "text_heads": text_heads or text_width // 64,
        "text_mlp_ratio": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
        "quick_gelu": quick_gelu,
    }
    if "visual.class_embedding" in state:
        width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        prefix = "visual.transformer.resblocks."
        kwargs["vision"] = {
            "kind": "vit",
            "image_size": grid * patch,
            "patch_size": patch,
            "width": width,
            "layers": _count_blocks(state, prefix),
            "heads": vision_heads or width // 64,
            "mlp_ratio": state[prefix + "0.mlp.c_fc.weight"].shape[0] / width,
        }
    else:
        width = state["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        kwargs["vision"] = {
            "kind": "modified_resnet",
            "image_size": grid * 32,
            "layers": tuple(_count_blocks(state, f"visual.layer{i}.") for i in range(1, 5)),
            "width": width,
            "heads": vision_heads or width * 32 // 64,
        }
    return kwargs


def clip_from_open_clip_state(
    state: dict[str, Any],
    quick_gelu: bool,
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> CLIP:
    """Build the :class:`~glimpse.models.clip.CLIP` of an open_clip state dict's shape
    (:func:`clip_kwargs_from_open_clip_state`) and load the converted tensors strictly.

    ``quick_gelu`` must match the model the weights come from (True for OpenAI's).
    """
    model = CLIP(**clip_kwargs_from_open_clip_state(state, quick_gelu, vision_heads, text_heads))
    model.load_state_dict(convert_open_clip_state_dict(state))
    return model


def _check_supported(model: OpenClipCLIP) -> None:
    """Refuse an open_clip model whose computation differs in ways its tensor names hide."""
    from open_clip.transformer import VisionTransformer as OpenClipViT

    visual = model.visual
    unsupported = {
        f"text pooling {model.text_pool_type!r}": model.text_pool_type != "argmax",
        "no causal text mask": model.attn_mask is None,
    }
    if isinstance(visual, OpenClipViT):
        unsupported |= {
            f"image pooling {visual.pool_type!r}": visual.pool_type != "tok",
            "a LayerNorm after pooling": visual.final_ln_after_pool,
            "no ln_pre": isinstance(visual.ln_pre, nn.Identity),
        }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"This open_clip model cannot be converted: it uses {', '.join(found)}.")
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if eps != {1e-5}:
        raise ValueError(f"open_clip uses LayerNorm eps {eps}; glimpse's CLIP uses 1e-5.")


def clip_from_open_clip(model: OpenClipCLIP) -> CLIP:
    """Build glimpse's :class:`~glimpse.models.clip.CLIP` of an open_clip ``CLIP`` model's
    shape, activation and head counts and load its weights strictly; the result computes the
    same embeddings and logit scale in evaluation mode."""
    from open_clip.transformer import QuickGELU as OpenClipQuickGELU

    _check_supported(model)
    visual = model.visual
    pool = getattr(visual, "attnpool", None)
    vision_heads = (
        pool.num_heads if pool is not None else visual.transformer.resblocks[0].attn.num_heads
    )
    first = model.transformer.resblocks[0]
    return clip_from_open_clip_state(
        model.state_dict(),
        quick_gelu=isinstance(first.mlp.gelu, OpenClipQuickGELU),
        vision_heads=vision_heads,
        text_heads=first.attn.num_heads,
    )
