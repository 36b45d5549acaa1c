"""Scratch recurrent cells against torch.nn and the lecture's equations; CharRNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from glimpse.models.char_rnn import CharRNN, detach_state
from glimpse.models.recurrent import (
    ScratchRecurrent,
    fused_recurrent,
    fused_state_from_scratch,
    reverse_padded,
    run_recurrent,
    scratch_state_from_fused,
)

CELLS = ("rnn", "lstm", "gru")
B, T, X, H, V = 2, 5, 3, 4, 7


def _random_state(cell: str, num_layers: int, generator: torch.Generator):
    def draw() -> torch.Tensor:
        return torch.randn(num_layers, B, H, generator=generator, dtype=torch.float64)

    return (draw(), draw()) if cell == "lstm" else draw()


def _pair(cell: str, num_layers: int, seed: int = 0):
    """A float64 torch.nn layer with random weights and the scratch stack mapped from it."""
    torch.manual_seed(seed)
    fused = fused_recurrent(cell, X, H, num_layers, 0.0).double()
    scratch = ScratchRecurrent(cell, X, H, num_layers, reset_after=True).double()
    scratch.load_state_dict(scratch_state_from_fused(fused.state_dict(), cell, num_layers))
    return fused, scratch


def _flatten(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def _with_grad(state):
    if isinstance(state, tuple):
        return tuple(s.clone().requires_grad_() for s in state)
    return state.clone().requires_grad_()


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_scratch_matches_fused_forward_and_backward(cell, num_layers):
    """Outputs, final states and all gradients agree once the fused ones are mapped."""
    fused, scratch = _pair(cell, num_layers)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, X, generator=gen, dtype=torch.float64)
    state = _random_state(cell, num_layers, gen)
    grad_out = torch.randn(B, T, H, generator=gen, dtype=torch.float64)
    grad_state = [torch.randn_like(s) for s in _flatten(state)]

    results = []
    for module in (fused, scratch):
        x_in, state_in = x.clone().requires_grad_(), _with_grad(state)
        out, final = module(x_in, state_in)
        loss = (out * grad_out).sum()
        loss = loss + sum((s * g).sum() for s, g in zip(_flatten(final), grad_state, strict=True))
        loss.backward()
        input_grads = [x_in.grad] + [s.grad for s in _flatten(state_in)]
        results.append((out, final, input_grads))
    (out_f, final_f, in_grads_f), (out_s, final_s, in_grads_s) = results

    assert_close(out_s, out_f)
    assert_close(_flatten(final_s), _flatten(final_f))
    assert_close(in_grads_s, in_grads_f)

    fused_grads = {name: p.grad.clone() for name, p in fused.named_parameters()}
    for layer in range(num_layers):
        g_ih, g_hh = fused_grads[f"bias_ih_l{layer}"], fused_grads[f"bias_hh_l{layer}"]
        # b = b_ih + b_hh, so both receive dL/db; only the GRU's n block of b_hh is separate.
        summed = slice(0, 2 * H) if cell == "gru" else slice(None)
        assert_close(g_ih[summed], g_hh[summed])
        kept_hh = torch.zeros_like(g_hh)
        if cell == "gru":
            kept_hh[2 * H :] = g_hh[2 * H :]
        fused_grads[f"bias_hh_l{layer}"] = kept_hh
    mapped = scratch_state_from_fused(fused_grads, cell, num_layers)
    scratch_grads = {name: p.grad for name, p in scratch.named_parameters()}
    assert mapped.keys() == scratch_grads.keys()
    for name, grad in scratch_grads.items():
        assert_close(grad, mapped[name], msg=name)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_scratch_fused_round_trip_preserves_function(cell, num_layers):
    """fused -> scratch -> fused weights give a torch.nn layer with the same outputs."""
    fused, _ = _pair(cell, num_layers)
    scratch_sd = scratch_state_from_fused(fused.state_dict(), cell, num_layers)
    rebuilt = fused_recurrent(cell, X, H, num_layers, 0.0).double()
    rebuilt.load_state_dict(fused_state_from_scratch(scratch_sd, cell, num_layers))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, X, generator=gen, dtype=torch.float64)
    state = _random_state(cell, num_layers, gen)
    with torch.no_grad():
        out, final = fused(x, state)
        out_rt, final_rt = rebuilt(x, state)
    assert_close(out_rt, out)
    assert_close(_flatten(final_rt), _flatten(final))


def _brute_force(scratch: ScratchRecurrent, x: torch.Tensor, state, step):
    """Run ``step(cell, x_t, state_t) -> state_t`` per sample, per step, per layer."""
    lstm = scratch.cell_type == "lstm"
    outputs = torch.empty(B, T, H, dtype=x.dtype)
    finals = [torch.empty_like(s) for s in _flatten(state)]
    for b in range(B):
        layer_input = x[b]
        for layer, cell in enumerate(scratch.cells):
            s = tuple(st[layer, b] for st in state) if lstm else state[layer, b]
            sequence = []
            for t in range(T):
                s = step(cell, layer_input[t], s)
                sequence.append(s[0] if lstm else s)
            layer_input = torch.stack(sequence)
            for final, value in zip(finals, _flatten(s), strict=True):
                final[layer, b] = value
        outputs[b] = layer_input
    return outputs, (tuple(finals) if lstm else finals[0])


def _elman_step(cell, x, h):
    """h_t = tanh(W_hh h_{t-1} + W_xh x_t + b)."""
    return torch.tanh(cell.weight_h @ h + cell.weight_x @ x + cell.bias)


def _lstm_step(cell, x, state):
    """(i, f, o, g) = (σ, σ, σ, tanh)(W [h; x] + b); c = f⊙c + i⊙g; h = o⊙tanh(c)."""
    h, c = state
    w = torch.cat([cell.weight_h, cell.weight_x], dim=1)
    a_i, a_f, a_o, a_g = (w @ torch.cat([h, x]) + cell.bias).chunk(4)
    i, f, o, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o), torch.tanh(a_g)
    c = f * c + i * g
    return o * torch.tanh(c), c


def _gru_slide_step(cell, x, h):
    """z, r = σ(W x + U h + b); ĥ = tanh(W_h x + U_h (r⊙h) + b_h); h = (1-z)⊙h + z⊙ĥ."""
    w_z, w_r, w_h = cell.weight_x.chunk(3)
    u_z, u_r, u_h = cell.weight_h.chunk(3)
    b_z, b_r, b_h = cell.bias.chunk(3)
    z = torch.sigmoid(w_z @ x + u_z @ h + b_z)
    r = torch.sigmoid(w_r @ x + u_r @ h + b_r)
    h_hat = torch.tanh(w_h @ x + u_h @ (r * h) + b_h)
    return (1 - z) * h + z * h_hat


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(
    ("cell", "step"), [("rnn", _elman_step), ("lstm", _lstm_step), ("gru", _gru_slide_step)]
)
def test_scratch_matches_lecture_equations(cell, step, num_layers):
    """Elman, LSTM and slide-form GRU (reset_after=False) against brute-force equations."""
    torch.manual_seed(3)
    scratch = ScratchRecurrent(cell, X, H, num_layers, reset_after=False).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(B, T, X, generator=gen, dtype=torch.float64)
    state = _random_state(cell, num_layers, gen)
    with torch.no_grad():
        out, final = scratch(x, state)
        expected_out, expected_final = _brute_force(scratch, x, state, step)
    assert_close(out, expected_out)
    assert_close(_flatten(final), _flatten(expected_final))


def test_fused_state_from_slide_form_gru_raises():
    """A reset-before (slide) GRU has no torch.nn equivalent."""
    scratch = ScratchRecurrent("gru", X, H, 2, reset_after=False)
    with pytest.raises(ValueError, match="reset_after"):
        fused_state_from_scratch(scratch.state_dict(), "gru", 2)


def _char_rnn_pair(cell: str, num_layers: int = 2):
    """A fused CharRNN and a scratch one holding the same function (float64, eval)."""
    torch.manual_seed(5)
    kwargs = dict(cell=cell, embedding_dim=X, hidden_size=H, num_layers=num_layers)
    fused = CharRNN(V, impl="fused", **kwargs).double().eval()
    scratch = CharRNN(V, impl="scratch", **kwargs).double().eval()
    scratch.embedding.load_state_dict(fused.embedding.state_dict())
    scratch.head.load_state_dict(fused.head.state_dict())
    mapped = scratch_state_from_fused(fused.recurrent.state_dict(), cell, num_layers)
    scratch.recurrent.load_state_dict(mapped)
    return fused, scratch


@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_scratch_and_fused_give_equal_logits(cell):
    """Mapped weights make impl=scratch and impl=fused the same model, shape (B, T, V)."""
    fused, scratch = _char_rnn_pair(cell)
    idx = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits_f, state_f = fused(idx)
        logits_s, state_s = scratch(idx)
    assert logits_f.shape == logits_s.shape == (B, T, V)
    assert_close(logits_s, logits_f)
    assert_close(_flatten(state_s), _flatten(state_f))


@pytest.mark.parametrize("impl", ["scratch", "fused"])
@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_carried_state_equals_whole_sequence(cell, impl):
    """Two halves with the state carried give the logits and state of one pass."""
    torch.manual_seed(7)
    model = CharRNN(V, cell, impl, embedding_dim=X, hidden_size=H, num_layers=2)
    model = model.double().eval()
    idx = torch.randint(0, V, (B, 2 * T), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole, state_whole = model(idx)
        first, state_half = model(idx[:, :T])
        second, state_end = model(idx[:, T:], state_half)
    assert whole.shape == (B, 2 * T, V)
    assert_close(torch.cat([first, second], dim=1), whole)
    assert_close(_flatten(state_end), _flatten(state_whole))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_detach_state_cuts_graph(cell):
    """detach_state keeps values and type but drops requires_grad and grad_fn."""
    model = CharRNN(V, cell, "scratch", embedding_dim=X, hidden_size=H, num_layers=1)
    _, state = model(torch.randint(0, V, (B, 3)))
    detached = detach_state(state)
    assert isinstance(detached, tuple) == (cell == "lstm")
    assert len(_flatten(detached)) == len(_flatten(state))
    for before, after in zip(_flatten(state), _flatten(detached), strict=True):
        assert before.requires_grad and before.grad_fn is not None
        assert not after.requires_grad and after.grad_fn is None
        assert torch.equal(after, before)
    assert detach_state(None) is None


def test_char_rnn_fused_slide_form_gru_raises():
    """impl=fused cannot hold the slide's reset-before GRU."""
    with pytest.raises(ValueError, match="reset_after"):
        CharRNN(V, cell="gru", impl="fused", reset_after=False)


@pytest.mark.parametrize(("cell", "reset_after"), [(c, True) for c in CELLS] + [("gru", False)])
def test_char_rnn_scratch_step_updates_every_parameter(cell, reset_after):
    """One SGD step on random data changes every parameter of a scratch CharRNN."""
    torch.manual_seed(9)
    model = CharRNN(
        V, cell, "scratch", embedding_dim=X, hidden_size=H, num_layers=2, reset_after=reset_after
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    idx = torch.randint(0, V, (B, T + 1))
    logits, _ = model(idx[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), idx[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_scratch_matches_packed_fused_on_padded_batches(cell, num_layers, bidirectional):
    """With lengths, a scratch stack equals torch.nn on a packed sequence: zeros past each row's
    length, the final state at its last real step, equal input gradients; bidirectional too."""
    torch.manual_seed(10)
    fused = fused_recurrent(cell, X, H, num_layers, 0.0, bidirectional).double()
    scratch = ScratchRecurrent(
        cell, X, H, num_layers, reset_after=True, bidirectional=bidirectional
    ).double()
    mapped = scratch_state_from_fused(fused.state_dict(), cell, num_layers, bidirectional)
    scratch.load_state_dict(mapped)
    gen = torch.Generator().manual_seed(11)
    lengths = torch.tensor([T, 2, 3])
    x = torch.randn(3, T, X, generator=gen, dtype=torch.float64)
    results = []
    for module in (fused, scratch):
        x_in = x.clone().requires_grad_()
        out, final = run_recurrent(module, x_in, None, lengths)
        out.square().sum().backward()
        results.append((out, _flatten(final), x_in.grad))
    (out_f, final_f, grad_f), (out_s, final_s, grad_s) = results
    directions = 2 if bidirectional else 1
    assert out_s.shape == (3, T, directions * H)
    assert_close(out_s, out_f)
    assert_close(final_s, final_f)
    assert_close(grad_s, grad_f)
    assert out_s[1, 2:].abs().max() == 0 and out_s[2, 3:].abs().max() == 0


def test_padding_changes_nothing_for_the_real_steps():
    """A row run alone and the same row padded inside a batch give the same outputs and state."""
    torch.manual_seed(12)
    scratch = ScratchRecurrent("lstm", X, H, 2, bidirectional=True).double()
    row = torch.randn(1, 3, X, dtype=torch.float64)
    padded = torch.cat([row, torch.randn(1, T - 3, X, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        alone, (h_alone, c_alone) = scratch(row)
        inside, (h_in, c_in) = scratch(padded, None, torch.tensor([3]))
    assert_close(inside[:, :3], alone)
    assert_close((h_in, c_in), (h_alone, c_alone))


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_round_trip_preserves_function(cell):
    """fused -> scratch -> fused for a bidirectional two-layer stack keeps the outputs."""
    torch.manual_seed(13)
    fused = fused_recurrent(cell, X, H, 2, 0.0, bidirectional=True).double()
    scratch_sd = scratch_state_from_fused(fused.state_dict(), cell, 2, bidirectional=True)
    rebuilt = fused_recurrent(cell, X, H, 2, 0.0, bidirectional=True).double()
    rebuilt.load_state_dict(fused_state_from_scratch(scratch_sd, cell, 2, bidirectional=True))
    x = torch.randn(B, T, X, dtype=torch.float64)
    with torch.no_grad():
        assert_close(rebuilt(x)[0], fused(x)[0])


def test_reverse_padded_reverses_each_row_within_its_length():
    x = torch.arange(8.0).view(2, 4, 1)
    reversed_rows = reverse_padded(x, torch.tensor([4, 2]))
    assert reversed_rows[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert reverse_padded(x, None)[..., 0].tolist() == [[3, 2, 1, 0], [7, 6, 5, 4]]
