"""Image-encoder features computed once and kept on disk, for captioning with a frozen encoder.

A frozen encoder maps each image to the same grid every epoch, so the grid can be computed
once per split and read back instead: training then runs only the decoder, many times faster.
:func:`cached_features` returns the ``(M, N, D)`` grids of a split's ``M`` images (N positions
of D channels), computed under :func:`torch.inference_mode` with the encoder in eval mode and
stored as float16 beside the image names in ``<folder>/<split>.pt``. The folder is named by
:func:`cache_digest` of everything the grids depend on (the encoder's key, the images' root
and preprocessing), so a change of encoder or preprocessing never reads stale features. The
file is written to a temporary name and renamed into place (``os.replace`` is atomic), so an
interrupted extraction leaves no file under the final name; it is read back memory-mapped, so
a large split's grids need not fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from glimpse.data.images.decode import open_rgb

log = logging.getLogger(__name__)

#: Characters of the sha256 hex digest naming a cache folder.
DIGEST_CHARS = 16


def cache_digest(**facts: object) -> str:
    """A short hex digest of ``facts`` (JSON-able values), naming a cache folder."""
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


class _Images(Dataset):
    """``paths[i]`` decoded and transformed: ``(3, H, W)`` float32."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return self.transform(open_rgb(self.paths[index]))


def extract_features(
    encoder: nn.Module,
    paths: Sequence[Path],
    transform: Callable,
    device: torch.device | str,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Tensor:
    """The encoder's grids of the images at ``paths``: ``(M, N, D)`` float16 on the CPU.

    ``encoder`` maps ``(B, 3, H, W)`` to ``(B, N, D)``; it runs in eval mode on ``device``
    (and is put back in its previous mode), in batches of ``batch_size`` images.
    """
    loader = DataLoader(_Images(paths, transform), batch_size=batch_size, num_workers=num_workers)
    was_training = encoder.training
    encoder.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for images in loader:
                grid = encoder(images.to(device))
                if grid.dim() != 3:
                    raise ValueError(
                        f"The feature encoder returned shape {tuple(grid.shape)}; a cached "
                        "encoder must map (B, 3, H, W) images to a (B, N, D) grid."
                    )
                chunks.append(grid.to("cpu", torch.float16))
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)


def save_features(path: Path, names: Sequence[str], features: Tensor) -> None:
    """Write ``{"names", "features"}`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"names": list(names), "features": features.contiguous()}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_features(path: Path, names: Sequence[str]) -> Tensor | None:
    """The memory-mapped features stored at ``path`` for exactly ``names`` (in that order), or
    None when there is no such file or it was written for other images."""
    if not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if stored.get("names") != list(names):
        log.warning("%s holds features of other images; computing them again", path)
        return None
    return stored["features"]


def cached_features(
    path: Path,
    names: Sequence[str],
    paths: Sequence[Path],
    encoder: nn.Module,
    transform: Callable,
    device: torch.device | str,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Tensor:
    """The ``(M, N, D)`` float16 grids of the images ``names`` (files ``paths``): read from
    ``path`` when it holds them, else computed by :func:`extract_features` and saved there."""
    features = load_features(path, names)
    if features is not None:
        log.info("Read the encoder features of %d images from %s", len(names), path)
        return features
    start = time.perf_counter()
    features = extract_features(encoder, paths, transform, device, batch_size, num_workers)
    save_features(path, names, features)
    log.info(
        "Computed the encoder features of %d images (%s per image) in %.1f s; cached in %s",
        len(names),
        "x".join(map(str, features.shape[1:])),
        time.perf_counter() - start,
        path,
    )
    return load_features(path, names)
