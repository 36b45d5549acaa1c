"""The heads that BYOL and DINO put on a backbone's features (they are dropped after training).

* :class:`MLPHead`: BYOL's projector ``g`` and predictor ``q`` (Grill et al. 2020, sec. 3.3):
  ``Linear(D, 4096) -> BatchNorm -> ReLU -> Linear(4096, 256)``.
* :class:`DINOHead`: DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix): a
  3-layer MLP with GELU (hidden 2048, bottleneck 256), L2 normalisation, then a weight-normalised
  linear layer without bias onto ``K`` prototypes (65536), its weight norms fixed at 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm


class MLPHead(nn.Module):
    """BYOL's projector/predictor MLP: ``(B, in_dim) -> (B, out_dim)``.

    ``Linear(in_dim, hidden_dim) -> BatchNorm1d -> ReLU -> Linear(hidden_dim, out_dim)``, the
    paper's 4096 and 256 by default; PyTorch's default initialisation.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DINOHead(nn.Module):
    """DINO's projection head: ``(B, in_dim) -> logits over K prototypes (B, out_dim)``.

    ``h = MLP(x)`` (``num_layers`` Linear layers, GELU between them, optional BatchNorm, ending
    at ``bottleneck_dim``), ``u = h / ||h||_2``, then ``logits = W u`` where each prototype
    ``w_k = g_k v_k / ||v_k||`` is weight-normalised (Salimans & Kingma 2016;
    :func:`torch.nn.utils.parametrizations.weight_norm`, ``last_layer.parametrizations.weight.
    original0`` is ``g (K, 1)``, ``original1`` is ``v (K, bottleneck_dim)``). ``g`` starts at 1
    and, with ``norm_last_layer`` (DINO's default), stays there (``requires_grad=False``), so
    the logits are cosine similarities between ``u`` and the prototypes.

    The MLP's Linear weights are ``trunc_normal_(std=0.02)`` (cut at +-2, so in effect N(0,
    0.02)) with zero biases, as in DINO's code; the last layer keeps PyTorch's default.
    Freezing the last layer during the first epoch is the training loop's job (zero the
    gradients of ``last_layer.parameters()``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DINOHead num_layers={num_layers} must be at least 1.")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(width_in, width_out))
            if index < num_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(width_out))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
