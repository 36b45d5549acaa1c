"""Ctrl-C that stops training cleanly, so ``last.ckpt`` holds a state a run resumes from exactly.

Lightning's own handling of Ctrl-C interrupts wherever the KeyboardInterrupt lands, often between
fetching a batch and training on it; a checkpoint written then would skip that batch on resume.
Here the first Ctrl-C asks the trainer to stop after the step it is in: training ends as it
does at ``max_steps``, and the end-of-training checkpoint is written
(:class:`~glimpse.callbacks.last_checkpoint.LastCheckpoint`). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lightning as L

from glimpse.utils.console import console


@dataclass
class InterruptRequest:
    """Whether Ctrl-C asked training to stop."""

    requested: bool = False


@contextmanager
def stop_after_step_on_ctrl_c(trainer: L.Trainer) -> Iterator[InterruptRequest]:
    """During the block (``trainer.fit``), the first SIGINT sets ``trainer.should_stop`` and
    ``request.requested``; the next one raises KeyboardInterrupt as usual. Outside the main
    thread (where signal handlers cannot be set) the block runs unchanged."""
    request = InterruptRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def stop(signum, frame) -> None:
        request.requested = True
        trainer.should_stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        console.print(
            "Ctrl-C: stopping after this step and saving last.ckpt (Ctrl-C again to stop at once)."
        )

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
