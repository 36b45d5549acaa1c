"""Resuming an interrupted run, and stopping cleanly on a non-finite loss."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train, small_model_overrides, tiny_overrides

from glimpse.run import train


def _overrides(corpus, tmp_path, *extra):
    # 400 lines of ~20 chars -> a ~7k-char train split; 4 streams x 16 chars gives ~100
    # batches per epoch. Validation after every 10 steps; dropout 0, so runs are deterministic.
    return [
        *tiny_overrides(corpus, tmp_path),
        *small_model_overrides("lstm"),
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "test=false",
        *extra,
    ]


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_resume_continues_at_the_right_step_with_the_same_result(corpus, tmp_path):
    full_dir, cut_dir, resumed_dir = tmp_path / "full", tmp_path / "cut", tmp_path / "resumed"
    full_value = train(compose_train(_overrides(corpus, tmp_path), full_dir))

    interrupt = [
        "+callbacks.interrupt._target_=interrupt_callbacks.InterruptAtStep",
        "+callbacks.interrupt.step=20",
    ]
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after KeyboardInterrupt
        train(compose_train(_overrides(corpus, tmp_path, *interrupt), cut_dir))
    last = cut_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 20

    resumed_value = train(
        compose_train(_overrides(corpus, tmp_path, f"ckpt_path={last}"), resumed_dir)
    )
    resumed_ckpt = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed_ckpt["global_step"] == 30
    assert resumed_value == pytest.approx(full_value, rel=1e-5)
    full_weights = _weights(full_dir / "checkpoints" / "last.ckpt")
    for name, tensor in resumed_ckpt["state_dict"].items():
        torch.testing.assert_close(tensor, full_weights[name], rtol=1e-5, atol=1e-6)


def test_ctrl_c_between_validations_resumes_to_the_uninterrupted_result(corpus, tmp_path):
    """Ctrl-C at step 17 ends training after that step; last.ckpt holds step 17, and a run
    resumed from it ends with the weights of one that was never interrupted."""
    full_dir, cut_dir, resumed_dir = tmp_path / "full", tmp_path / "cut", tmp_path / "resumed"
    train(compose_train(_overrides(corpus, tmp_path), full_dir))
    ctrl_c = [
        "+callbacks.ctrl_c._target_=interrupt_callbacks.CtrlCAtStep",
        "+callbacks.ctrl_c.step=17",
    ]
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(_overrides(corpus, tmp_path, *ctrl_c), cut_dir))
    assert stopped.value.code == 130
    last = cut_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 17

    train(compose_train(_overrides(corpus, tmp_path, f"ckpt_path={last}"), resumed_dir))
    resumed = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 30
    full_weights = _weights(full_dir / "checkpoints" / "last.ckpt")
    for name, tensor in resumed["state_dict"].items():
        torch.testing.assert_close(tensor, full_weights[name], rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    run_dir = tmp_path / "run"
    nan_at = [
        "+callbacks.poison._target_=interrupt_callbacks.NaNWeightsAtStep",
        "+callbacks.poison.step=15",
    ]
    with pytest.raises(FloatingPointError, match="global step 15"):
        train(compose_train(_overrides(corpus, tmp_path, *nan_at), run_dir))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 10
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_last_checkpoint_is_the_latest_step_even_when_the_metric_stops_improving(corpus, tmp_path):
    """Asking for the largest val/loss makes the first validation the best; last.ckpt must still
    hold the final step (Lightning's own save_last copies only when a best is written)."""
    run_dir = tmp_path / "run"
    train(compose_train(_overrides(corpus, tmp_path, "optimized_mode=max"), run_dir))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best_step0000010.ckpt", "last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30
