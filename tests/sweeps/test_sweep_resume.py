"""Resuming an interrupted sweep (basic and Optuna sweepers) as a user does: the sweep killed
with SIGKILL while job 2 trains, then its command again with resume_sweep=<sweep folder>; the
result equals an uninterrupted sweep's and no job trains twice from the start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from _helpers_sweeps import SUBPROCESS_ENV, tiny_job
from conftest import copy_repository_root, make_corpus, run_script

from glimpse.run_folder import LAST_CHECKPOINT, RESULT_FILE, read_metrics, read_result

pytestmark = pytest.mark.slow

#: Four tiny jobs: long enough (60 steps, a validation every 10) that job 2 is caught midway.
SWEEP = ["-m", "seed=1,2,3,4", *tiny_job(max_steps=60, val_every=10)]

OPTUNA = [
    "hparams_search=charlm_optuna",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.sampler.n_startup_trials=2",
    *SWEEP[2:],
    "test=false",
]


def _checkout(folder: Path) -> Path:
    """A copy of the repository root to run train.py from, holding the corpus the sweep trains
    on."""
    copy_repository_root(folder)
    make_corpus(folder / "corpus.txt")
    return folder


def _sweep_folder(cwd: Path) -> Path:
    (sweep,) = (cwd / "logs" / "train" / "multiruns").iterdir()
    return sweep


def _kill_while_job_2_trains(cwd: Path, overrides: list[str]) -> Path:
    """Start ``python train.py <overrides>`` in the checkout ``cwd``, in its own process group,
    and SIGKILL the group as soon as job 2 has written its first checkpoint; return the sweep
    folder."""
    process = subprocess.Popen(
        [sys.executable, "train.py", *overrides],
        cwd=cwd,
        env={**os.environ, **SUBPROCESS_ENV},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            sweeps = list((cwd / "logs" / "train" / "multiruns").glob("*"))
            if sweeps and (sweeps[0] / "2" / LAST_CHECKPOINT).is_file():
                break
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the sweep ended before job 2 was caught"
    return _sweep_folder(cwd)


def _fingerprint(job: Path) -> dict[str, int]:
    """When each file that a finished job's training wrote was last written (not Hydra's record
    of the command, .hydra/, nor the log, which the resumed command rewrites and extends)."""
    return {
        str(path.relative_to(job)): path.stat().st_mtime_ns
        for path in job.rglob("*")
        if path.is_file() and ".hydra" not in path.parts and path.name != "train.log"
    }


def _assert_same_jobs(resumed: Path, full: Path) -> None:
    jobs = sorted(p.name for p in resumed.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == sorted(p.name for p in full.iterdir() if p.is_dir() and p.name.isdigit())
    for job in jobs:
        mine, theirs = read_result(resumed / job), read_result(full / job)
        assert mine.value == pytest.approx(theirs.value, rel=1e-5), job
        steps = [(r["stage"], r["step"]) for r in read_metrics(resumed / job)]
        assert steps == [(r["stage"], r["step"]) for r in read_metrics(full / job)], job
        weights = torch.load(resumed / job / LAST_CHECKPOINT, weights_only=True)
        reference = torch.load(full / job / LAST_CHECKPOINT, weights_only=True)
        assert weights["global_step"] == reference["global_step"] == 60
        for name, tensor in weights["state_dict"].items():
            torch.testing.assert_close(tensor, reference["state_dict"][name], rtol=1e-5, atol=1e-6)


def test_a_killed_sweep_resumes_to_the_result_of_an_uninterrupted_one(tmp_path):
    cut = _checkout(tmp_path / "cut")
    sweep = _kill_while_job_2_trains(cut, SWEEP)
    assert [(sweep / job / RESULT_FILE).is_file() for job in "012"] == [True, True, False]
    assert not (sweep / "3").exists()
    finished = {job: _fingerprint(sweep / job) for job in "01"}
    checkpoint_step = torch.load(sweep / "2" / LAST_CHECKPOINT, weights_only=True)["global_step"]
    assert 0 < checkpoint_step < 60

    resumed = run_script("train.py", *SWEEP, f"resume_sweep={sweep}", cwd=cut)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _sweep_folder(cut) == sweep  # no second sweep folder
    log = " ".join(resumed.stderr.split())
    for job in "01":
        assert f"Job {sweep / job} had finished" in log
        assert _fingerprint(sweep / job) == finished[job]  # not a file written again
    assert f"Job {sweep / '2'} resumes from {sweep / '2' / LAST_CHECKPOINT}" in log
    job_2_log = (sweep / "2" / "train.log").read_text()
    assert (
        f"Restored all states from the checkpoint at {sweep / '2' / LAST_CHECKPOINT}" in job_2_log
    )
    assert f"Job {sweep / '3'} has no checkpoint yet: it trains from the start." in log

    full = _checkout(tmp_path / "full")
    uninterrupted = run_script("train.py", *SWEEP, cwd=full)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    _assert_same_jobs(sweep, _sweep_folder(full))


def test_a_killed_optuna_sweep_finishes_its_study_with_the_trials_an_uninterrupted_one_runs(
    tmp_path,
):
    cut = _checkout(tmp_path / "cut")
    sweep = _kill_while_job_2_trains(cut, OPTUNA)
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    states = [t.state for t in optuna.load_study(study_name="charlm", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.RUNNING]
    finished = {job: _fingerprint(sweep / job) for job in "01"}

    resumed = run_script("train.py", *OPTUNA, f"resume_sweep={sweep}", cwd=cut)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _sweep_folder(cut) == sweep
    log = " ".join(resumed.stderr.split())
    assert "Resuming study charlm: 2 trials done, 1 interrupted." in log
    assert f"Job {sweep / '2'} resumes from {sweep / '2' / LAST_CHECKPOINT}" in log
    assert all(_fingerprint(sweep / job) == finished[job] for job in "01")

    full = _checkout(tmp_path / "full")
    uninterrupted = run_script("train.py", *OPTUNA, cwd=full)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    reference = _sweep_folder(full)
    study = optuna.load_study(study_name="charlm", storage=storage)
    expected = optuna.load_study(
        study_name="charlm", storage=f"sqlite:///{reference / 'optuna.db'}"
    )
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert [t.params for t in study.trials] == [t.params for t in expected.trials]
    assert [t.value for t in study.trials] == pytest.approx([t.value for t in expected.trials])
    _assert_same_jobs(sweep, reference)
