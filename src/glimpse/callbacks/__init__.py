"""Lightning callbacks: checkpoints, the progress bar, and the samples and pictures the tasks
log during training (drawn by :mod:`glimpse.plotting`)."""
