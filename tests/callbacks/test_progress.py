"""The progress bar: on stderr, and a training description that reads right for step limits."""

from __future__ import annotations

from types import SimpleNamespace

from glimpse.callbacks.progress import ProgressBar


def _described(max_epochs: int, max_steps: int, epoch: int = 3) -> str:
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps)
    return bar._get_train_description(epoch).strip()


def test_a_step_limited_run_reads_epoch_and_target_step_not_minus_two():
    assert _described(max_epochs=-1, max_steps=2400) == "Epoch 3 (to step 2400)"


def test_an_epoch_limited_run_reads_epoch_of_last_epoch():
    assert _described(max_epochs=10, max_steps=-1) == "Epoch 3/9"


def test_the_bar_draws_on_stderr():
    bar = ProgressBar()
    assert bar._console_kwargs["stderr"] is True
