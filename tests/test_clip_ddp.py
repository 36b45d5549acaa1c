"""CLIP's loss under 2-process CPU DDP (gloo) equals the single-process loss on the whole batch.

Each rank embeds its half of a global batch of pairs with a small DDP-wrapped model, gathers
the embeddings of both ranks with gradients (:func:`glimpse.models.clip_loss.gather_with_grad`)
and takes the loss of its rows against every column. The mean of the ranks' losses and the
parameter gradients DDP averages must equal one process's loss and gradients on the
concatenated batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from glimpse.models.clip_loss import clip_loss

WORLD_SIZE = 2
PER_RANK = 4


class TwoTowers(nn.Module):
    """Linear image and text projections and CLIP's learnable log logit scale."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.image = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        self.log_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, images: torch.Tensor, texts: torch.Tensor):
        image_emb = F.normalize(self.image(images), dim=-1)
        text_emb = F.normalize(self.text(texts), dim=-1)
        return image_emb, text_emb, self.log_scale.exp()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    total = WORLD_SIZE * PER_RANK
    return torch.randn(total, 6, generator=generator), torch.randn(total, 5, generator=generator)


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = DistributedDataParallel(TwoTowers())
        images, texts = _batch()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        loss = clip_loss(*model(images[rows], texts[rows]))
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        grads = {name: p.grad for name, p in model.module.named_parameters()}
        torch.save(
            {
                "loss": loss.detach(),
                "mean_loss": mean_loss / WORLD_SIZE,
                "grads": grads,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_equal_the_single_process_loss_on_the_whole_batch(
    tmp_path: Path,
):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    model = TwoTowers()
    images, texts = _batch()
    loss = clip_loss(*model(images, texts))
    loss.backward()

    for result in results:
        torch.testing.assert_close(result["mean_loss"], loss.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(result["grads"][name], p.grad, msg=name)
    # Each rank's loss saw the other rank's negatives: it differs from its half-batch loss.
    for rank, result in enumerate(results):
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        with torch.no_grad():
            half_batch = clip_loss(*model(images[rows], texts[rows]))
        assert not torch.allclose(result["loss"], half_batch)
