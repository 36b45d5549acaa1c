"""torchvision ``VisionTransformer`` (``vit_b_16``, ``vit_l_32``, ...) -> glimpse's ViT.

Both compute the same function: pre-norm blocks with LayerNorm ``eps=1e-6``, exact GELU,
dropout after the position embedding, the attention output and both MLP layers, and the head
on the final LayerNorm of the class token. ``nn.MultiheadAttention``'s ``in_proj_weight``
stacks the query, key and value rows exactly like our ``qkv`` Linear, so every tensor maps
unchanged; only the names differ.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import Tensor, nn

from glimpse.models.convert import rename_key
from glimpse.models.vit import VisionTransformer

if TYPE_CHECKING:
    from torchvision.models import VisionTransformer as TorchvisionViT

_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
_KEY_MAP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), target)
    for pattern, target in [
        (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
        (r"class_token", "cls_token"),
        (r"encoder\.pos_embedding", "pos_embed"),
        (_LAYER + r"ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
        (_LAYER + r"self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
        (_LAYER + r"self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
        (_LAYER + r"ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
        (_LAYER + r"mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        (_LAYER + r"mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        (r"encoder\.ln\.(weight|bias)", r"norm.\1"),
        (r"heads\.head\.(weight|bias)", r"head.\1"),
    ]
]


def _map_key(key: str) -> str:
    renamed = rename_key(key, _KEY_MAP)
    if renamed is not None:
        return renamed
    raise KeyError(
        f"torchvision ViT key {key!r} has no glimpse counterpart (conv stems and "
        f"representation_size pre-logits layers are not supported)."
    )


def vit_state_from_torchvision(tv_state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ``VisionTransformer`` state dict to :class:`VisionTransformer`'s.

    Tensors are shared, not copied. An unknown key raises ``KeyError`` naming it.
    """
    return {_map_key(key): value for key, value in tv_state_dict.items()}


def vit_from_torchvision(tv_model: TorchvisionViT) -> VisionTransformer:
    """Build a :class:`VisionTransformer` of ``tv_model``'s shape and load its weights.

    The result computes the same logits as ``tv_model`` in evaluation mode, and uses the same
    dropout rates in training.
    """
    if not isinstance(tv_model.conv_proj, nn.Conv2d) or tv_model.representation_size:
        raise ValueError(
            "Only torchvision ViTs with a patchify stem and no representation_size layer "
            "can be converted."
        )
    eps = tv_model.encoder.ln.eps
    if eps != 1e-6:
        raise ValueError(f"torchvision ViT uses LayerNorm eps={eps}; glimpse's ViT uses 1e-6.")
    model = VisionTransformer(
        img_size=tv_model.image_size,
        patch_size=tv_model.patch_size,
        in_chans=tv_model.conv_proj.in_channels,
        num_classes=tv_model.heads.head.out_features,
        embed_dim=tv_model.hidden_dim,
        depth=len(tv_model.encoder.layers),
        num_heads=tv_model.encoder.layers[0].num_heads,
        mlp_ratio=tv_model.mlp_dim / tv_model.hidden_dim,
        drop_rate=tv_model.dropout,
        attn_drop_rate=tv_model.attention_dropout,
    )
    model.load_state_dict(vit_state_from_torchvision(tv_model.state_dict()))
    return model
