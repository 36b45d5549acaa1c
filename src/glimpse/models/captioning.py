"""Image captioning networks: a ResNet grid encoder and two recurrent decoders.

* :class:`CaptionEncoder` turns images ``(B, 3, H, W)`` into a grid of annotation vectors
  ``z (B, N, D)``, ``N = h·w`` (the last convolutional map of a torchvision ResNet).
* :class:`ShowTell` (Vinyals et al. 2015, the lecture's captioning RNN): the pooled feature
  gives the initial state ``h_0 = f_w(z̄)`` and the context ``c = h_0``, fed with the previous
  word at every step, ``h_t = RNN([E y_{t-1}; c], h_{t-1})``.
* :class:`ShowAttendTell` (Xu et al. 2015): soft attention over the grid at every step,
  a gated context vector and a deep output layer.

Both decoders share one protocol, used by teacher forcing (``forward``) and by the searches of
:mod:`glimpse.models.decoding` (``prepare``, ``init_state``, ``step``); every tensor in
a memory or state tuple has the batch on dim 0 so that beam search can expand and reorder it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from glimpse.models.recurrent import GRUCell, LSTMCell
from glimpse.models.resnet import load_trunk_state, resnet

Memory = tuple[Tensor, ...]
State = tuple[Tensor, ...]
TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class CaptionOutput(NamedTuple):
    """Teacher-forced decoder outputs.

    logits: ``(R, T, V)``, the scores of word ``t + 1`` given words ``0..t``.
    attention: ``(R, T, N)`` soft-attention weights (ShowAttendTell), else None.
    gates: ``(R, T)`` the context gate ``β_t`` (ShowAttendTell with ``gate=True``), else None.
    """

    logits: Tensor
    attention: Tensor | None
    gates: Tensor | None


class CaptionEncoder(nn.Module):
    """The convolutional trunk of a torchvision ResNet: ``(B, 3, H, W) -> z (B, N, D)``.

    ``conv1 .. layer4`` run as in torchvision (the average pool and ``fc`` are dropped), so the
    parameter names are torchvision's and its ImageNet state dict loads as it is. The map
    ``(B, D, h, w)`` is flattened row by row into ``N = h·w`` annotation vectors.

    Args:
        arch: a torchvision ResNet name (``resnet18`` ... ``resnet152``, ``resnext50_32x4d``).
        small_images: the CIFAR stem of :func:`glimpse.models.resnet.resnet` (3x3 stride-1
            convolution, no max-pool), for images of 32-64 px; ImageNet weights don't fit it.
        grid_size: average-pool the map to ``grid_size x grid_size`` (Xu et al. use 14x14);
            None keeps the trunk's map, ``H/32 x W/32`` (``H/8`` with ``small_images``).
        stages: residual stages run, 4 (up to ``layer4``) or 3 (up to ``layer3``: a map twice
            as fine, ``H/16 x W/16``, the 14x14 grid of Xu et al. at 224 px, with half the
            channels and about a quarter less computation).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        small_images: bool = False,
        grid_size: int | None = None,
        stages: int = 4,
    ) -> None:
        super().__init__()
        if stages not in (3, 4):
            raise ValueError(f"model.encoder.stages={stages} must be 3 or 4.")
        model = resnet(arch, small_images=small_images)
        self.trunk_names = TRUNK[: len(TRUNK) - (4 - stages)]
        for name in self.trunk_names:
            setattr(self, name, getattr(model, name))
        self.arch = arch
        self.small_images = small_images
        self.grid_size = grid_size
        self.stages = stages
        last_stage = getattr(model, self.trunk_names[-1])[-1]
        self.out_dim: int = (
            last_stage.bn3 if hasattr(last_stage, "bn3") else last_stage.bn2
        ).num_features
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size is not None else nn.Identity()

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W) -> grid (B, N, D)``."""
        x = images
        for name in self.trunk_names:
            x = getattr(self, name)(x)
        return self.pool(x).flatten(2).transpose(1, 2)

    def grid_shape(self, image_size: int | Sequence[int]) -> tuple[int, int]:
        """``(h, w)`` of the grid for images of ``image_size`` (an int or ``(H, W)``).

        Every stride-2 layer (the stem's convolution and max-pool, then layer2..4) maps a side
        ``s`` to ``ceil(s / 2)``.
        """
        if self.grid_size is not None:
            return self.grid_size, self.grid_size
        sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        halvings = (3 if self.small_images else 5) - (4 - self.stages)
        height, width = (math.ceil(side / 2**halvings) for side in sides)
        return height, width

    def load_imagenet_state(self, state: dict[str, Tensor]) -> None:
        """Load a torchvision ResNet state dict (the ``fc.*`` classifier, and ``layer4`` when
        the encoder stops before it, are dropped)."""
        dropped = ("fc.",) if self.stages == 4 else ("fc.", "layer4.")
        load_trunk_state(
            self,
            state,
            lambda key: key.startswith(dropped),
            f"CaptionEncoder(arch={self.arch!r}, small_images={self.small_images}) (ImageNet "
            "weights need small_images=false)",
        )


def _check_impl(impl: str) -> None:
    if impl not in ("fused", "scratch"):
        raise ValueError(f"Unknown model.decoder.impl={impl!r}; choose fused or scratch.")


class _InitialState(nn.Module):
    """``h_0 = tanh(W_h z̄ + b_h)`` and ``c_0 = W_c z̄ + b_c`` from the mean annotation ``z̄``.

    One-layer MLPs, as in Xu et al. 2015 sec. 3.1.2 (``f_init,h``, ``f_init,c``); ``c_0`` is
    left out when ``with_cell`` is False (GRU).
    """

    def __init__(self, feature_dim: int, hidden_size: int, with_cell: bool) -> None:
        super().__init__()
        self.init_h = nn.Linear(feature_dim, hidden_size)
        self.init_c = nn.Linear(feature_dim, hidden_size) if with_cell else None

    def forward(self, grid: Tensor) -> State:
        """``grid (B, N, D) -> (h_0, c_0)`` or ``(h_0,)``, each ``(B, H)``."""
        pooled = grid.mean(dim=1)
        h0 = torch.tanh(self.init_h(pooled))
        return (h0,) if self.init_c is None else (h0, self.init_c(pooled))


class ShowTell(nn.Module):
    """The lecture's captioning RNN (Show and Tell, Vinyals et al. 2015).

    Encoder side ``h_0 = f_w(z̄)`` (and ``c_0`` for an LSTM) with ``z̄ = mean_i z_i``; the
    context ``c = h_0`` is concatenated to the embedded previous word at every step:

        ``h_t = RNN([E y_{t-1}; c], h_{t-1})``,  ``p(y_t) = softmax(W_o dropout(h_t) + b_o)``.

    Args:
        vocab_size: V.
        feature_dim: D, the encoder's ``out_dim``.
        cell: ``"lstm"`` or ``"gru"``.
        impl: ``"fused"`` runs torch.nn.LSTM/GRU over the whole teacher-forced sequence;
            ``"scratch"`` runs the lecture's cells of :mod:`glimpse.models.recurrent`. The GRU is
            torch's reset-after form in both, so a fused state dict maps onto a scratch one
            with :func:`glimpse.models.recurrent.scratch_state_from_fused`.
        embed_dim: E.
        hidden_size: H.
        dropout: on ``h_t`` before the read-out.

    Memory is ``(h_0, c_0)`` (LSTM) or ``(h_0,)`` (GRU); state is ``(h, c)`` or ``(h,)``,
    every tensor ``(B, H)``.
    """

    uses_attention = False

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        cell: Literal["lstm", "gru"] = "lstm",
        impl: Literal["fused", "scratch"] = "fused",
        embed_dim: int = 256,
        hidden_size: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"Unknown model.decoder.cell={cell!r}; choose lstm or gru.")
        _check_impl(impl)
        self.cell, self.impl = cell, impl
        self.vocab_size = vocab_size
        self.init = _InitialState(feature_dim, hidden_size, with_cell=cell == "lstm")
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        inputs = embed_dim + hidden_size
        if impl == "fused":
            layer = nn.LSTM if cell == "lstm" else nn.GRU
            self.recurrent = layer(inputs, hidden_size, batch_first=True)
        elif cell == "lstm":
            self.recurrent = LSTMCell(inputs, hidden_size)
        else:
            self.recurrent = GRUCell(inputs, hidden_size, reset_after=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def prepare(self, grid: Tensor) -> Memory:
        """``grid (B, N, D) -> (h_0, c_0)`` (LSTM) or ``(h_0,)`` (GRU); ``c = h_0``."""
        return self.init(grid)

    def init_state(self, memory: Memory) -> State:
        """The state before the first word: ``h_0`` (and ``c_0``)."""
        return memory

    def _run(self, words: Tensor, state: State, memory: Memory) -> tuple[Tensor, State]:
        """``words (B, T)`` -> hidden states ``(B, T, H)`` and the state after the last."""
        embedded = self.embedding(words)
        context = memory[0].unsqueeze(1).expand(-1, words.shape[1], -1)
        x = torch.cat([embedded, context], dim=-1)
        if self.impl == "fused":
            carried = tuple(s.unsqueeze(0) for s in state)
            hidden, final = self.recurrent(x, carried if self.cell == "lstm" else carried[0])
            final = final if self.cell == "lstm" else (final,)
            return hidden, tuple(s.squeeze(0) for s in final)
        projected = self.recurrent.project_inputs(x)
        outputs = []
        for t in range(words.shape[1]):
            if self.cell == "lstm":
                state = self.recurrent.step(projected[:, t], state)
            else:
                state = (self.recurrent.step(projected[:, t], state[0]),)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state

    def forward(self, grid: Tensor, inputs: Tensor) -> CaptionOutput:
        """Teacher forcing: ``grid (R, N, D)``, ``inputs (R, T)`` -> logits ``(R, T, V)``."""
        memory = self.prepare(grid)
        hidden, _ = self._run(inputs, self.init_state(memory), memory)
        return CaptionOutput(self.head(self.dropout(hidden)), None, None)

    def step(
        self, tokens: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor | None]:
        """One word: ``tokens (B,)`` -> ``(logits (B, V), state, None)``."""
        hidden, state = self._run(tokens.unsqueeze(1), state, memory)
        return self.head(self.dropout(hidden[:, 0])), state, None


class ShowAttendTell(nn.Module):
    """Soft-attention captioning decoder (Show, Attend and Tell, Xu et al. 2015, sec. 3.1).

    With annotations ``z_i (D)``, ``i = 1..N``, and the LSTM state ``(h_{t-1}, c_{t-1})``:

    * attention ``e_{t,i} = w^T tanh(W_z z_i + W_h h_{t-1} + b)``, ``a_t = softmax_i(e_t)``;
    * gate ``β_t = σ(f_β(h_{t-1}))`` (a scalar; 1 when ``gate=False``) and context
      ``ẑ_t = β_t Σ_i a_{t,i} z_i``;
    * ``h_t, c_t = LSTM([E y_{t-1}; ẑ_t], (h_{t-1}, c_{t-1}))``;
    * deep output (eq. 7) ``p(y_t) ∝ exp(L_o dropout(E y_{t-1} + L_h h_t + L_z ẑ_t))``;
    * ``h_0 = tanh(f_init,h(z̄))``, ``c_0 = f_init,c(z̄)`` with ``z̄ = mean_i z_i``.

    Args:
        vocab_size: V.
        feature_dim: D, the encoder's ``out_dim``.
        embed_dim: E, also the width of the deep output layer (``L_o`` is ``V x E``).
        hidden_size: H.
        attention_dim: A, the width of the attention MLP.
        dropout: before ``L_o``.
        gate: use the gating scalar ``β_t`` (Xu et al. sec. 4.2.1).
        impl: ``"fused"`` steps torch.nn.LSTMCell, ``"scratch"`` the lecture's
            :class:`glimpse.models.recurrent.LSTMCell`.
        cell: ``"lstm"``, the only choice; accepted so one config shape fits both decoders.

    Memory is ``(z (B, N, D), W_z z + b (B, N, A))``; state is ``(h, c)``, each ``(B, H)``.

    The attention is additive (Bahdanau et al. 2015): its score is an MLP of the annotation and
    the state, not a scaled dot product, so
    :func:`~torch.nn.functional.scaled_dot_product_attention` cannot compute it; it is one query
    per step over ``N`` positions, small enough that the explicit softmax costs little.
    """

    uses_attention = True

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 256,
        hidden_size: int = 512,
        attention_dim: int = 512,
        dropout: float = 0.5,
        gate: bool = True,
        impl: Literal["fused", "scratch"] = "fused",
        cell: Literal["lstm"] = "lstm",
    ) -> None:
        super().__init__()
        _check_impl(impl)
        if cell != "lstm":
            raise ValueError(
                f"model.decoder.cell={cell!r}: Show, Attend and Tell's decoder is an LSTM "
                "(Xu et al. 2015); use cell=lstm, or model=show_tell for a GRU."
            )
        self.impl = impl
        self.vocab_size = vocab_size
        self.init = _InitialState(feature_dim, hidden_size, with_cell=True)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attend_features = nn.Linear(feature_dim, attention_dim)
        self.attend_hidden = nn.Linear(hidden_size, attention_dim, bias=False)
        self.attend_score = nn.Linear(attention_dim, 1)
        self.gate = nn.Linear(hidden_size, 1) if gate else None
        cell = nn.LSTMCell if impl == "fused" else LSTMCell
        self.recurrent = cell(embed_dim + feature_dim, hidden_size)
        self.out_hidden = nn.Linear(hidden_size, embed_dim)
        self.out_context = nn.Linear(feature_dim, embed_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, vocab_size)

    def prepare(self, grid: Tensor) -> Memory:
        """``grid (B, N, D) -> (z, W_z z + b)``; the projection is computed once per image."""
        return grid, self.attend_features(grid)

    def init_state(self, memory: Memory) -> State:
        """``(h_0, c_0)`` from the mean annotation."""
        return self.init(memory[0])

    def _advance(
        self, embedded: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor, Tensor | None]:
        """One step from ``E y_{t-1} (B, E)``: logits, new state, ``a_t (B, N)``, ``β_t (B,)``."""
        grid, projected = memory
        h, c = state
        scores = self.attend_score(torch.tanh(projected + self.attend_hidden(h).unsqueeze(1)))
        attention = scores.squeeze(-1).softmax(dim=-1)
        context = torch.einsum("bn,bnd->bd", attention, grid)
        gate = None
        if self.gate is not None:
            gate = torch.sigmoid(self.gate(h)).squeeze(-1)
            context = gate.unsqueeze(-1) * context
        x = torch.cat([embedded, context], dim=-1)
        if self.impl == "fused":
            h, c = self.recurrent(x, (h, c))
        else:
            h, c = self.recurrent.step(self.recurrent.project_inputs(x), (h, c))
        deep = embedded + self.out_hidden(h) + self.out_context(context)
        return self.head(self.dropout(deep)), (h, c), attention, gate

    def forward(self, grid: Tensor, inputs: Tensor) -> CaptionOutput:
        """Teacher forcing: ``grid (R, N, D)``, ``inputs (R, T)`` -> logits, ``a (R, T, N)``,
        ``β (R, T)``."""
        memory = self.prepare(grid)
        state = self.init_state(memory)
        embedded = self.embedding(inputs)
        logits, attention, gates = [], [], []
        for t in range(inputs.shape[1]):
            step_logits, state, weights, gate = self._advance(embedded[:, t], state, memory)
            logits.append(step_logits)
            attention.append(weights)
            gates.append(gate)
        stacked_gates = None if self.gate is None else torch.stack(gates, dim=1)
        return CaptionOutput(
            torch.stack(logits, dim=1), torch.stack(attention, dim=1), stacked_gates
        )

    def step(
        self, tokens: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor | None]:
        """One word: ``tokens (B,)`` -> ``(logits (B, V), state, attention (B, N))``."""
        logits, state, attention, _ = self._advance(self.embedding(tokens), state, memory)
        return logits, state, attention


def doubly_stochastic_penalty(attention: Tensor, mask: Tensor) -> Tensor:
    """Xu et al. eq. 14's regulariser per caption: ``Σ_i (1 - Σ_t a_{t,i})²``.

    Args:
        attention: ``(R, T, N)`` weights ``a_{t,i}``.
        mask: ``(R, T)`` bool, True at the steps that predict a real word (padding excluded).

    Returns ``(R,)``; the loss adds ``λ`` times its mean.
    """
    totals = (attention * mask.unsqueeze(-1).to(attention.dtype)).sum(dim=1)
    return (1 - totals).pow(2).sum(dim=-1)


__all__ = [
    "CaptionEncoder",
    "CaptionOutput",
    "Memory",
    "ShowAttendTell",
    "ShowTell",
    "State",
    "doubly_stochastic_penalty",
]
