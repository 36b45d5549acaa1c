"""The tiny character-model job that the sweep and requeue tests run through train.py, as a
user types it: the corpus ``corpus.txt`` in the working directory, a 16-wide LSTM."""

from __future__ import annotations

#: Environment of a train.py subprocess: no prompts, unbuffered, one thread.
SUBPROCESS_ENV = {"PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def tiny_job(max_steps: int, val_every: int) -> list[str]:
    """Overrides of one tiny job: ``max_steps`` steps, a two-batch validation every
    ``val_every``, no text samples, the CSV logger."""
    return [
        "data=text",
        "data.path=corpus.txt",
        "data.seq_len=16",
        "data.batch_size=4",
        "model.net.hidden_size=16",
        "model.net.embedding_dim=8",
        "model.net.num_layers=1",
        "model.samples.num_chars=0",
        "logger=csv",
        f"trainer.max_steps={max_steps}",
        f"trainer.val_check_interval={val_every}",
        "trainer.limit_val_batches=2",
    ]
