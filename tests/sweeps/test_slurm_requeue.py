"""Lightning's SLURM auto-requeue, on CPU: SIGUSR1 sent to a training process that looks like a
SLURM job saves a checkpoint and requeues the job (a stand-in ``scontrol`` records the call and
ends the job, as SLURM does); the requeued job continues from that checkpoint in its folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _helpers_sweeps import SUBPROCESS_ENV, tiny_job
from conftest import copy_repository_root, make_corpus

from glimpse.run_folder import LAST_CHECKPOINT, read_metrics, read_result

pytestmark = pytest.mark.slow

TRAIN = ["-m", *tiny_job(max_steps=300, val_every=20), "test=false"]

#: scontrol as SLURM runs it for `scontrol requeue <job>`: the job is put back in the queue and
#: its running process ended.
FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{calls}"
kill -KILL $PPID
"""


def _slurm_env(tmp_path: Path, restarts: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(FAKE_SCONTROL.format(calls=tmp_path / "scontrol_calls.txt"))
    scontrol.chmod(0o755)
    return {
        **os.environ,
        **SUBPROCESS_ENV,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "glimpse",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_RESTART_COUNT": str(restarts),
    }


def test_sigusr1_checkpoints_and_requeues_and_the_requeued_job_continues(tmp_path):
    copy_repository_root(tmp_path)
    make_corpus(tmp_path / "corpus.txt")
    job = subprocess.Popen(
        [sys.executable, "train.py", *TRAIN],
        cwd=tmp_path,
        env=_slurm_env(tmp_path, restarts=0),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        if list(tmp_path.glob(f"logs/train/multiruns/*/0/{LAST_CHECKPOINT}")):
            break
        time.sleep(0.02)
    job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=120) == -signal.SIGKILL  # ended by "SLURM" after the requeue
    assert (tmp_path / "scontrol_calls.txt").read_text() == "requeue 4242\n"
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    folder = sweep / "0"
    (hpc,) = folder.glob("hpc_ckpt_*.ckpt")
    signalled_at = torch.load(hpc, weights_only=True)["global_step"]
    assert 20 <= signalled_at < 300 and read_result(folder) is None

    # SLURM runs the requeued job again with the sweep's config, so in the same folder.
    requeued = subprocess.run(
        [sys.executable, "train.py", *TRAIN, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=_slurm_env(tmp_path, restarts=1),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    log = " ".join(requeued.stderr.split())
    assert f"Job {folder} resumes from {hpc}" in log
    assert f"Restored all states from the checkpoint at {hpc}" in log
    assert read_result(folder) is not None
    records = read_metrics(folder)
    assert records[-1]["step"] == 300
    # The signal's checkpoint is taken mid-step (Lightning saves in the handler), so the
    # requeued job's validations may fall a batch off the 20-step grid; none is logged twice.
    validations = [r["step"] for r in records if r["stage"] == "val"]
    assert validations[0] == 20 and validations == sorted(set(validations))
    assert len(validations) == 15
