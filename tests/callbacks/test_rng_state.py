"""RNGState: a run with dropout resumed from its checkpoint ends with the weights of an
uninterrupted run, which it does not without the generators' state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import compose_train, small_model_overrides, tiny_overrides

from glimpse.callbacks.rng_state import RNGState
from glimpse.run import train

INTERRUPT = [
    "+callbacks.interrupt._target_=interrupt_callbacks.InterruptAtStep",
    "+callbacks.interrupt.step=20",
]


def _overrides(corpus, tmp_path, *extra):
    return [
        *tiny_overrides(corpus, tmp_path),
        *small_model_overrides("lstm"),
        "model.net.num_layers=2",
        "model.net.dropout=0.3",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "test=false",
        *extra,
    ]


def _final_weights(corpus, tmp_path, name, *extra):
    cut, resumed = tmp_path / f"{name}_cut", tmp_path / f"{name}_resumed"
    with pytest.raises(SystemExit):
        train(compose_train(_overrides(corpus, tmp_path, *INTERRUPT, *extra), cut))
    last = cut / "checkpoints" / "last.ckpt"
    train(compose_train(_overrides(corpus, tmp_path, f"ckpt_path={last}", *extra), resumed))
    return torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_a_resumed_run_with_dropout_ends_with_the_uninterrupted_weights(corpus, tmp_path):
    train(compose_train(_overrides(corpus, tmp_path), tmp_path / "full"))
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)

    resumed = _final_weights(corpus, tmp_path, "with")
    for name, tensor in resumed.items():
        torch.testing.assert_close(tensor, full["state_dict"][name], rtol=1e-5, atol=1e-6)

    without = _final_weights(corpus, tmp_path, "without", "callbacks.rng_state=null")
    assert any(not torch.allclose(t, full["state_dict"][n]) for n, t in without.items())


def test_the_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    state = RNGState().state_dict()
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.save({"callbacks": {"RNGState": state}}, tmp_path / "state.ckpt")
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    loaded = torch.load(tmp_path / "state.ckpt", weights_only=True)["callbacks"]["RNGState"]
    RNGState().load_state_dict(loaded)
    torch.testing.assert_close(torch.rand(4), expected[0])
    np.testing.assert_array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]
