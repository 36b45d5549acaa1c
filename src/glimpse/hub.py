"""Published weights (torchvision's ImageNet checkpoints) fetched through torch.hub's cache.

torchvision downloads a checkpoint once into ``$TORCH_HOME/hub/checkpoints/`` (by default
``~/.cache/torch/hub/checkpoints/``) and checks its hash. On a machine without internet access
that download fails; :func:`torchvision_weights_state` turns the failure into one sentence that
names the weights, the address, the cache file where a copy can be placed by hand, and the
setting that trains without them.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models import WeightsEnum

from glimpse.errors import DownloadError


def cache_file(url: str) -> Path:
    """Where torch.hub keeps (and looks for) the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_weights_state(
    weights: WeightsEnum, without: str = "model.pretrained=null"
) -> dict[str, Tensor]:
    """The state dict of torchvision's ``weights`` (e.g. ``ResNet50_Weights.IMAGENET1K_V1``),
    read from torch.hub's cache or downloaded into it, hash-checked.

    Raises :class:`~glimpse.errors.DownloadError` when the file cannot be had: ``without`` is
    the override that trains without these weights, named in the message."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"Could not download torchvision's {weights} weights from {weights.url} ({reason}); "
            f"place that file at {cache_file(weights.url)} by hand, or train without them "
            f"with {without}."
        ) from None
