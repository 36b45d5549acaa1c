"""CLIP's symmetric contrastive loss (InfoNCE over image-text pairs), across all ranks.

Radford et al. (2021), fig. 3: with ``N`` L2-normalised image embeddings ``I`` and text
embeddings ``T`` of ``N`` true pairs, ``logits = s · I Tᵀ`` (``s = exp(t)``, the learned logit
scale) and the loss is ``(CE(logits, arange N) + CE(logitsᵀ, arange N)) / 2``: each image must
pick its own caption among the batch's ``N`` captions and each caption its own image, so the
``N`` true pairs are pulled together and the ``N² − N`` wrong pairings pushed apart.

Under data parallelism every rank holds ``B`` pairs of the global batch of ``N = W·B``.
:func:`gather_with_grad` collects the embeddings of all ranks in rank order while keeping the
autograd graph, so each rank scores its ``B`` rows against the global batch's ``N`` columns
(open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``). The gather's backward sums
every rank's gradient for a rank's rows, and DDP averages the parameter gradients, so the
training step equals one step of the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor
from torch.nn import functional as F


def distributed_rank_and_size() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(features: Tensor) -> Tensor:
    """Every rank's ``(B, E)`` features concatenated in rank order, ``(W·B, E)``, with gradients
    flowing back to each rank's own rows (:func:`torch.distributed.nn.functional.all_gather`).
    Every rank must pass the same ``B`` (training loaders drop the last partial batch). Without
    a process group (or with one rank) the features are returned as they are."""
    _, world_size = distributed_rank_and_size()
    if world_size == 1:
        return features
    # Deprecated since torch 2.10 in favour of the private _functional_collectives; it is what
    # Lightning's all_gather(sync_grads=True) calls, and works on every torch glimpse supports.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_fn.all_gather(features), dim=0)


def clip_logits(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """``s · I Tᵀ``: image embeddings ``(B, E)`` and text embeddings ``(N, E)`` (L2-normalised)
    and the scale ``s`` (a scalar, already exponentiated) -> cosine logits ``(B, N)`` in
    float32."""
    return logit_scale.float() * image_emb.float() @ text_emb.float().T


def clip_loss(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, gather: bool = True
) -> Tensor:
    """The symmetric InfoNCE loss of ``B`` local pairs against the global batch.

    Args:
        image_emb: ``(B, E)`` L2-normalised image embeddings of this rank's pairs.
        text_emb: ``(B, E)`` L2-normalised text embeddings; row ``i`` is the caption of image
            ``i``.
        logit_scale: the scalar ``s = exp(t)`` multiplying the cosine similarities.
        gather: score against every rank's pairs (under a process group); False keeps to the
            local ``B`` pairs (evaluation batches, whose sizes may differ between ranks).

    Returns:
        A scalar: the mean over this rank's ``B`` images of the cross-entropy of picking their
        caption among all ``W·B`` captions, plus the same for captions picking their image,
        halved. Averaged over the ``W`` ranks (as DDP averages gradients) it is the loss of the
        whole batch of ``W·B`` pairs.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(
            f"CLIP's loss needs image and text embeddings of one shape (B, E), not "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}."
        )
    rank = distributed_rank_and_size()[0] if gather else 0
    all_images, all_texts = image_emb, text_emb
    if gather:
        all_images, all_texts = gather_with_grad(image_emb), gather_with_grad(text_emb)
    size = image_emb.shape[0]
    labels = torch.arange(size, device=image_emb.device) + rank * size
    logits_per_image = clip_logits(image_emb, all_texts, logit_scale)
    logits_per_text = clip_logits(text_emb, all_images, logit_scale)
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2
