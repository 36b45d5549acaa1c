"""Sweeps that survive an interruption: a job started again in its own folder
(:mod:`~glimpse.sweeps.resume`) and Hydra's Optuna sweeper resuming its study
(:mod:`~glimpse.sweeps.optuna`)."""
