"""Recurrent layers written from the lecture's equations, and their mapping to torch.nn.

Lecture 9 (CS231n) gives three cells. With ``x_t`` the input at step ``t`` and ``h_{t-1}``
the previous hidden state:

* Vanilla (Elman) RNN: ``h_t = tanh(W_hh h_{t-1} + W_xh x_t)``.
* LSTM: ``(i, f, o, g) = (σ, σ, σ, tanh)(W [h_{t-1}; x_t])``, ``c_t = f ⊙ c_{t-1} + i ⊙ g``,
  ``h_t = o ⊙ tanh(c_t)``.
* GRU: ``z_t = σ(W_z x_t + U_z h_{t-1} + b_z)``, ``r_t = σ(W_r x_t + U_r h_{t-1} + b_r)``,
  ``ĥ_t = tanh(W_h x_t + U_h (r_t ⊙ h_{t-1}) + b_h)``, ``h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ ĥ_t``.

Every cell here also carries a bias (the lecture drops it for brevity; Cho et al. 2014 and
Hochreiter & Schmidhuber 1997 have one). ``W [h; x]`` is kept as two matrices, ``W_x`` and
``W_h``, so that the input projection of a whole sequence is one matrix product and only
``W_h h_{t-1}`` runs inside the time loop.

torch.nn.GRU (like cuDNN) differs from the slide in two ways: its ``z`` gates the *old* state
(``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``), and it applies the reset gate after the recurrent
product, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`` (Cho et al. 2014, v3, eq. 5 note).
:class:`GRUCell` implements the slide by default and the reset-after form with
``reset_after=True``; :func:`scratch_state_from_fused` maps torch's ``z`` to the slide's by
negating its pre-activation, since ``σ(-a) = 1 - σ(a)``.

A stack also runs padded batches of different lengths (``lengths``: a row's steps past its
length leave its state unchanged and output zeros, as torch's packed sequences do) and
bidirectionally (a second cell per layer reads each row backwards from its last real step,
Schuster & Paliwal 1997; the encoder of Bahdanau et al. 2015). :func:`run_recurrent` runs
either implementation on such a batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CellType = Literal["rnn", "lstm", "gru"]
#: Number of stacked gate blocks in each cell's ``W_x``/``W_h``.
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}


class _Cell(nn.Module):
    """Shared parameters of a cell: ``W_x (G*H, X)``, ``W_h (G*H, H)`` and ``b (G*H,)``."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_x = nn.Parameter(torch.empty(self.gates * hidden_size, input_size))
        self.weight_h = nn.Parameter(torch.empty(self.gates * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(self.gates * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), the initialisation torch.nn.RNN/LSTM/GRU use."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_inputs(self, x: Tensor) -> Tensor:
        """``W_x x_t + b`` for every step at once: ``(B, T, X) -> (B, T, G*H)``."""
        return nn.functional.linear(x, self.weight_x, self.bias)


class ElmanCell(_Cell):
    """``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b)``; state ``h`` is ``(B, H)``."""

    gates = 1

    def step(self, projected_x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(projected_x + h @ self.weight_h.T)


class LSTMCell(_Cell):
    """The lecture's LSTM; gate blocks stacked in the slide's order ``(i, f, o, g)``.

    State is ``(h, c)``, both ``(B, H)``.
    """

    gates = 4

    def step(self, projected_x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        pre = projected_x + h @ self.weight_h.T
        i, f, o = torch.sigmoid(pre[:, : 3 * self.hidden_size]).chunk(3, dim=1)
        g = torch.tanh(pre[:, 3 * self.hidden_size :])
        c = f * c + i * g
        return o * torch.tanh(c), c


class GRUCell(_Cell):
    """The lecture's GRU; gate blocks stacked as ``(z, r, h)``; state ``h`` is ``(B, H)``.

    With ``reset_after=True`` the candidate is ``tanh(W_h x + b_h + r ⊙ (U_h h + b_hn))``,
    the form of torch.nn.GRU and cuDNN, with the extra bias ``b_hn``.
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = False) -> None:
        self.reset_after = reset_after
        super().__init__(input_size, hidden_size)
        if reset_after:
            bound = 1.0 / math.sqrt(hidden_size)
            self.bias_hn = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))

    def step(self, projected_x: Tensor, h: Tensor) -> Tensor:
        size = self.hidden_size
        u_zr, u_h = self.weight_h[: 2 * size], self.weight_h[2 * size :]
        z, r = torch.sigmoid(projected_x[:, : 2 * size] + h @ u_zr.T).chunk(2, dim=1)
        if self.reset_after:
            recurrent = r * (h @ u_h.T + self.bias_hn)
        else:
            recurrent = (r * h) @ u_h.T
        candidate = torch.tanh(projected_x[:, 2 * size :] + recurrent)
        return (1 - z) * h + z * candidate


class ScratchRecurrent(nn.Module):
    """A stack of scratch cells with the interface of ``torch.nn.{RNN,LSTM,GRU}(batch_first=True)``.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        input_size: X, the size of each input vector.
        hidden_size: H.
        num_layers: L stacked layers; layer ``l > 0`` reads layer ``l - 1``'s outputs.
        dropout: dropout on the outputs of every layer but the last, as in torch.nn.
        reset_after: GRU only; see :class:`GRUCell`.
        bidirectional: each layer also runs a backward cell and outputs ``[h_fwd; h_bwd]``.

    ``forward(x (B, T, X), state, lengths) -> (outputs (B, T, D·H), state)`` with D = 2 when
    bidirectional, else 1, where ``state`` is ``h (D·L, B, H)`` for rnn and gru and ``(h, c)``
    for lstm, or None for zeros; rows are ordered as torch's (layer 0 forward, layer 0
    backward, layer 1 forward, ...). ``lengths (B,)`` int64, when given, marks the steps
    ``t >= lengths[b]`` of row ``b`` as padding: they keep the state and output zeros.
    """

    def __init__(
        self,
        cell: CellType,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        reset_after: bool = False,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"Unknown recurrent cell {cell!r}; choose one of rnn, lstm, gru.")
        self.cell_type = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        sizes = [input_size] + [self.directions * hidden_size] * (num_layers - 1)
        cells = []
        for size in sizes:
            for _ in range(self.directions):
                if cell == "rnn":
                    cells.append(ElmanCell(size, hidden_size))
                elif cell == "lstm":
                    cells.append(LSTMCell(size, hidden_size))
                else:
                    cells.append(GRUCell(size, hidden_size, reset_after))
        self.cells = nn.ModuleList(cells)

    def _run_cell(self, cell: _Cell, x: Tensor, state, valid: Tensor | None):
        """One direction of one layer over ``x (B, T, X)``; ``valid (B, T)`` bool or None."""
        lstm = self.cell_type == "lstm"
        projected = cell.project_inputs(x)
        outputs = []
        for t in range(projected.shape[1]):
            new = cell.step(projected[:, t], state)
            if valid is None:
                state = new
                outputs.append(new[0] if lstm else new)
                continue
            keep = valid[:, t, None]
            if lstm:
                state = (torch.where(keep, new[0], state[0]), torch.where(keep, new[1], state[1]))
                outputs.append(torch.where(keep, new[0], 0.0))
            else:
                state = torch.where(keep, new, state)
                outputs.append(torch.where(keep, new, 0.0))
        return torch.stack(outputs, dim=1), state

    def forward(
        self,
        x: Tensor,
        state: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | None = None,
    ):
        batch, steps = x.shape[:2]
        lstm = self.cell_type == "lstm"
        if state is None:
            zeros = x.new_zeros(self.directions * self.num_layers, batch, self.hidden_size)
            state = (zeros, zeros.clone()) if lstm else zeros
        valid = None
        if lengths is not None:
            valid = torch.arange(steps, device=x.device) < lengths.to(x.device).unsqueeze(1)
        final_h, final_c = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                index = layer * self.directions + direction
                layer_state = (state[0][index], state[1][index]) if lstm else state[index]
                sequence = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                out, layer_state = self._run_cell(self.cells[index], sequence, layer_state, valid)
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                final_h.append(layer_state[0] if lstm else layer_state)
                if lstm:
                    final_c.append(layer_state[1])
            layer_input = torch.cat(outputs, dim=-1) if self.bidirectional else outputs[0]
            if layer < self.num_layers - 1:
                layer_input = self.dropout(layer_input)
        if lstm:
            return layer_input, (torch.stack(final_h), torch.stack(final_c))
        return layer_input, torch.stack(final_h)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Each row of ``x (B, T, ...)`` reversed within its first ``lengths[b]`` steps (padding
    stays where it is); the whole rows when ``lengths`` is None."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    index = index.view(*index.shape, *([1] * (x.ndim - 2))).expand_as(x)
    return x.gather(1, index)


def run_recurrent(
    layer: nn.Module,
    x: Tensor,
    state: Tensor | tuple[Tensor, Tensor] | None = None,
    lengths: Tensor | None = None,
):
    """Run a :class:`ScratchRecurrent` or a ``torch.nn.RNNBase`` (``batch_first``) over a
    padded batch ``x (B, T, X)`` with ``lengths (B,)`` (None: no padding).

    A torch.nn layer gets a packed sequence (:func:`torch.nn.utils.rnn.pack_padded_sequence`),
    so both give zeros past each row's length and the state at its last real step.
    """
    if isinstance(layer, ScratchRecurrent):
        return layer(x, state, lengths)
    if lengths is None:
        return layer(x, state)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = layer(packed, state)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])
    return outputs, final


def fused_recurrent(
    cell: CellType,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """The torch.nn (cuDNN on a GPU) layer of the same shape, ``batch_first=True``."""
    layer_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return layer_cls(
        input_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        batch_first=True,
        bidirectional=bidirectional,
    )


def _blocks(tensor: Tensor, count: int) -> list[Tensor]:
    return list(tensor.chunk(count, dim=0))


def _slots(num_layers: int, bidirectional: bool) -> list[tuple[str, str]]:
    """``(torch.nn suffix, scratch prefix)`` of every layer and direction, in torch's order."""
    directions = ("", "_reverse") if bidirectional else ("",)
    return [
        (f"_l{layer}{suffix}", f"cells.{layer * len(directions) + d}.")
        for layer in range(num_layers)
        for d, suffix in enumerate(directions)
    ]


def scratch_state_from_fused(
    fused: dict[str, Tensor], cell: CellType, num_layers: int, bidirectional: bool = False
):
    """Map a torch.nn.{RNN,LSTM,GRU} state dict onto :class:`ScratchRecurrent`'s parameters.

    torch keeps two biases, ``b_ih + b_hh``; a scratch cell has their sum. LSTM blocks are
    reordered from torch's ``(i, f, g, o)`` to the slide's ``(i, f, o, g)``. GRU blocks go
    from ``(r, z, n)`` to ``(z, r, h)`` with the ``z`` pre-activation negated (torch's
    ``z`` is the slide's ``1 - z``); the target GRU must be built with ``reset_after=True``.
    A bidirectional layer's ``*_reverse`` weights go to the backward cells.
    """
    state: dict[str, Tensor] = {}
    for suffix, prefix in _slots(num_layers, bidirectional):
        w_x, w_h = fused[f"weight_ih{suffix}"], fused[f"weight_hh{suffix}"]
        b_x, b_h = fused[f"bias_ih{suffix}"], fused[f"bias_hh{suffix}"]
        if cell == "rnn":
            state.update({prefix + "weight_x": w_x, prefix + "weight_h": w_h})
            state[prefix + "bias"] = b_x + b_h
        elif cell == "lstm":
            order = [0, 1, 3, 2]
            for name, tensor in (("weight_x", w_x), ("weight_h", w_h), ("bias", b_x + b_h)):
                blocks = _blocks(tensor, 4)
                state[prefix + name] = torch.cat([blocks[k] for k in order])
        elif cell == "gru":
            (wr, wz, wn), (ur, uz, un) = _blocks(w_x, 3), _blocks(w_h, 3)
            (bxr, bxz, bxn), (bhr, bhz, bhn) = _blocks(b_x, 3), _blocks(b_h, 3)
            state[prefix + "weight_x"] = torch.cat([-wz, wr, wn])
            state[prefix + "weight_h"] = torch.cat([-uz, ur, un])
            state[prefix + "bias"] = torch.cat([-(bxz + bhz), bxr + bhr, bxn])
            state[prefix + "bias_hn"] = bhn
        else:
            raise ValueError(f"Unknown recurrent cell {cell!r}; choose one of rnn, lstm, gru.")
    return state


def fused_state_from_scratch(
    scratch: dict[str, Tensor], cell: CellType, num_layers: int, bidirectional: bool = False
):
    """The inverse of :func:`scratch_state_from_fused` (the bias goes to ``b_ih``, ``b_hh = 0``)."""
    state: dict[str, Tensor] = {}
    for suffix, prefix in _slots(num_layers, bidirectional):
        w_x, w_h, bias = (scratch[prefix + k] for k in ("weight_x", "weight_h", "bias"))
        if cell == "rnn":
            fused_wx, fused_wh, fused_bx, fused_bh = w_x, w_h, bias, torch.zeros_like(bias)
        elif cell == "lstm":
            order = [0, 1, 3, 2]
            fused_wx, fused_wh, fused_bx = (
                torch.cat([_blocks(t, 4)[k] for k in order]) for t in (w_x, w_h, bias)
            )
            fused_bh = torch.zeros_like(bias)
        elif cell == "gru":
            if prefix + "bias_hn" not in scratch:
                raise ValueError(
                    "torch.nn.GRU applies the reset gate after U_h; only a scratch GRU built "
                    "with reset_after=True maps onto it."
                )
            (wz, wr, wn), (uz, ur, un) = _blocks(w_x, 3), _blocks(w_h, 3)
            bz, br, bn = _blocks(bias, 3)
            fused_wx = torch.cat([wr, -wz, wn])
            fused_wh = torch.cat([ur, -uz, un])
            fused_bx = torch.cat([br, -bz, bn])
            zeros = torch.zeros_like(bn)
            fused_bh = torch.cat([zeros, zeros, scratch[prefix + "bias_hn"]])
        else:
            raise ValueError(f"Unknown recurrent cell {cell!r}; choose one of rnn, lstm, gru.")
        state[f"weight_ih{suffix}"] = fused_wx
        state[f"weight_hh{suffix}"] = fused_wh
        state[f"bias_ih{suffix}"] = fused_bx
        state[f"bias_hh{suffix}"] = fused_bh
    return state
