"""What a job started again in its own folder does, the sweep folder resume_sweep= names, and
the SLURM launcher's requeue signal."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from conftest import CONF, REPO, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from glimpse.errors import ConfigError, MissingFileError
from glimpse.run_folder import CONFIG_FILE, LAST_CHECKPOINT, write_result
from glimpse.sweeps.resume import SLURM_RESTARTS, latest_checkpoint, resume_point
from glimpse.utils.run_dir import sweep_dir


def _job(sweep: Path, overrides: list[str], number: int = 0):
    """A config composed as a job of ``sweep`` (its folder ``sweep/<number>``), saved there as
    train.py saves it."""
    job = sweep / str(number)
    cfg = compose_train(overrides, job)
    job.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, job / CONFIG_FILE, resolve=True)
    return cfg, job


def test_a_finished_job_returns_its_result_and_a_half_done_one_its_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    cfg, job = _job(sweep, [f"+resume_sweep={sweep}"])
    assert resume_point(cfg, job, in_sweep=True).checkpoint is None  # trains from the start

    (job / LAST_CHECKPOINT).parent.mkdir()
    (job / LAST_CHECKPOINT).write_bytes(b"")
    assert resume_point(cfg, job, in_sweep=True).checkpoint == job / LAST_CHECKPOINT

    write_result(job, "val/loss", 1.25, {"val/loss": 1.25})
    point = resume_point(cfg, job, in_sweep=True)
    assert point.result.value == 1.25 and point.checkpoint is None


def test_ordinary_runs_do_not_resume_and_a_requeued_slurm_job_does(tmp_path, monkeypatch):
    cfg, job = _job(tmp_path / "runs", [])
    (job / LAST_CHECKPOINT).parent.mkdir()
    (job / LAST_CHECKPOINT).write_bytes(b"")
    monkeypatch.delenv(SLURM_RESTARTS, raising=False)
    assert resume_point(cfg, job, in_sweep=False) is None
    monkeypatch.setenv(SLURM_RESTARTS, "1")
    assert resume_point(cfg, job, in_sweep=True).checkpoint == job / LAST_CHECKPOINT


def test_the_newest_of_last_ckpt_and_lightnings_hpc_checkpoints_is_resumed(tmp_path):
    (tmp_path / LAST_CHECKPOINT).parent.mkdir()
    for age, name in enumerate(["hpc_ckpt_2.ckpt", str(LAST_CHECKPOINT), "hpc_ckpt_1.ckpt"]):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(10**18 - age * 10**9,) * 2)
    assert latest_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_2.ckpt"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_resuming_with_another_command_or_outside_a_multirun_is_one_sentence(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, [f"+resume_sweep={sweep}", "seed=1"])
    changed, job = compose_train([f"+resume_sweep={sweep}", "seed=2"], sweep / "0"), sweep / "0"
    with pytest.raises(
        ConfigError, match=r"was trained with another config \(seed=1 then, 2 now\)"
    ):
        resume_point(changed, job, in_sweep=True)
    with pytest.raises(ConfigError, match="resume_sweep= resumes a multirun: run the sweep's"):
        resume_point(changed, job, in_sweep=False)
    elsewhere = compose_train([f"+resume_sweep={tmp_path / 'other'}", "seed=1"], job)
    with pytest.raises(ConfigError, match=f"{job} is not inside resume_sweep="):
        resume_point(elsewhere, job, in_sweep=True)


def _sweep_dir(*overrides: str) -> str:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return str(cfg.hydra.sweep.dir)


def test_resume_sweep_names_the_sweep_folder_and_must_exist(tmp_path):
    (tmp_path / "sweep").mkdir()
    assert _sweep_dir(f"resume_sweep={tmp_path / 'sweep'}") == str(tmp_path / "sweep")
    assert "/multiruns/" in sweep_dir(None, "logs/train/multiruns/new")
    with pytest.raises(MissingFileError, match="resume_sweep=nowhere is not a folder"):
        sweep_dir("nowhere", "logs/train/multiruns/new")


def test_a_slurm_job_resolves_the_sweep_folder_its_launcher_created(tmp_path):
    """The submitit launcher pickles the sweep's config into each SLURM job, whose process (new
    on every requeue) composes its config again and copies the resolver cache over
    (``ConfigLoader.load_sweep_config``): the run id must come from that cache."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    created = str(master.hydra.sweep.dir)
    (tmp_path / "master.pkl").write_bytes(pickle.dumps(master))
    job = (
        "import pickle, sys; sys.path.insert(0, 'tests')\n"
        "from conftest import CONF\n"
        "from hydra import compose, initialize_config_dir\n"
        "from omegaconf import OmegaConf\n"
        f"master = pickle.load(open({str(tmp_path / 'master.pkl')!r}, 'rb'))\n"
        "with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['hydra/launcher=slurm'], return_hydra_config=True)\n"
        "OmegaConf.copy_cache(from_config=master, to_config=cfg)\n"
        "print(cfg.hydra.sweep.dir)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", job], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == created


def test_the_slurm_launcher_asks_for_the_signal_lightning_requeues_on(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    sbatch = submitit.slurm.slurm._make_sbatch_string(
        command="python -u -m submitit.core._submit",
        folder=tmp_path,
        signal_delay_s=launcher.signal_delay_s,
        additional_parameters=OmegaConf.to_container(launcher.additional_parameters, resolve=True),
    )
    signals = [line for line in sbatch.splitlines() if line.startswith("#SBATCH --signal")]
    assert signals == [f"#SBATCH --signal=USR1@{launcher.signal_delay_s}"]
