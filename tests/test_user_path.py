"""What a new user types, run as typed from a copy of the repository root: sweeps, short runs,
Ctrl-C, any Trainer argument, misspellings, and the weights that cannot be downloaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, copy_repository_root, run_script

from glimpse.overrides import trainer_arguments

#: An https proxy on a closed loopback port: every download fails at once, as on a machine
#: without internet access, whether or not this one has it.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
#: The smallest runs of the default LSTM: a few steps, one batch of each evaluation.
FEW_STEPS = ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv"]


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error sentence the run ended with (exit status 1, no traceback)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert "error:" in message, result.stderr[-3000:]
    return message[message.rindex("error:") :]


def _checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_a_multirun_from_the_repository_root_puts_each_job_in_one_sweep_folder(tmp_path):
    result = run_script(
        "train.py", "-m", "model=rnn,lstm", "trainer.max_steps=2", *FEW_STEPS, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert _checkpoint_step(sweep / job / "checkpoints" / "last.ckpt") == 2
    assert f"Sweep folder: {sweep}" in " ".join(result.stderr.split())


def test_the_optuna_search_runs_to_the_end_from_the_repository_root(tmp_path):
    result = run_script(
        "train.py",
        "hparams_search=charlm_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        *FEW_STEPS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert (sweep / "optimization_results.yaml").is_file()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


def test_a_run_shorter_than_one_validation_interval_leaves_last_ckpt_for_eval(tmp_path):
    trained = run_script("train.py", "trainer.max_steps=3", *FEW_STEPS, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (last,) = tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")
    assert _checkpoint_step(last) == 3
    evaluated = run_script(
        "eval.py", f"ckpt_path={last}", "num_chars=20", "trainer.limit_test_batches=1", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test/loss" in evaluated.stderr


def test_max_time_ends_training_with_last_ckpt_at_the_final_step(tmp_path):
    trained = run_script(
        "train.py",
        "trainer.max_steps=100000",
        "trainer.max_time=00:00:00:08",
        *FEW_STEPS,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (last,) = tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")
    rows = next(tmp_path.glob("logs/train/runs/*/csv/version_0/metrics.csv")).read_text()
    assert 0 < _checkpoint_step(last) < 100000
    assert "test/loss" in rows


def test_ctrl_c_stops_after_the_step_and_leaves_last_ckpt_to_resume_from(tmp_path):
    copy_repository_root(tmp_path)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "trainer.max_steps=100000",
            "trainer.log_every_n_steps=1",
            *FEW_STEPS,
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    logged_step = -1
    while time.monotonic() < deadline and logged_step < 3:
        time.sleep(0.5)
        for metrics in tmp_path.glob("logs/train/runs/*/csv/version_0/metrics.csv"):
            rows = [row.split(",") for row in metrics.read_text().splitlines()[1:]]
            step_column = metrics.read_text().splitlines()[0].split(",").index("step")
            logged_step = max((int(row[step_column]) for row in rows if row), default=-1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    (last,) = tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")
    step = _checkpoint_step(last)
    assert step >= logged_step >= 3
    message = " ".join(stderr.split())
    assert f"Stopped by Ctrl-C at step {step}; not tested." in message
    assert f"ckpt_path={last}" in message and "Traceback" not in stderr


def test_the_trainer_config_lists_every_argument_of_lightnings_trainer():
    import yaml
    from conftest import CONF

    listed = set(yaml.safe_load((CONF / "trainer" / "default.yaml").read_text()))
    assert listed == {"_target_", *trainer_arguments()} - {"logger", "callbacks"}


@pytest.mark.parametrize(
    "override",
    [
        "trainer.fast_dev_run=true",
        "trainer.max_time=00:00:10:00",
        "trainer.accumulate_grad_batches=2",
        "trainer.overfit_batches=2",
    ],
)
def test_any_trainer_argument_is_set_with_a_plain_override(tmp_path, override):
    result = run_script(
        "train.py", override, "trainer.max_steps=2", *FEW_STEPS, "--cfg", "job", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    key, value = override.removeprefix("trainer.").split("=")
    assert f"{key}: {value}" in result.stdout.replace("'", "")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "trainer.max_step=5",
            "trainer.max_step is not an argument of lightning.Trainer (did you "
            "mean trainer.max_steps?)",
        ),
        ("model=swni", "model=swni is not one of the model configs (did you mean model=swin?)"),
        ("data=shakespare", "did you mean data=shakespeare"),
        ("trainer.logger=csv", "trainer.logger is set by the logger config group"),
    ],
)
def test_a_misspelt_override_fails_in_one_sentence_naming_the_closest(tmp_path, override, expected):
    message = _one_line_error(run_script("train.py", override, cwd=tmp_path))
    assert expected in message


def test_a_misspelt_choice_in_a_sweep_is_caught_before_any_job_runs(tmp_path):
    message = _one_line_error(run_script("train.py", "-m", "model=rnn,lsmt", cwd=tmp_path))
    assert "model=lsmt is not one of the model configs (did you mean model=lstm?)" in message
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("overrides", "weights"),
    [
        (["model=show_attend_tell", "data=shapes_captions", "data.num_images=20"], "ResNet"),
        (["model=detr", "data=shapes_detection", "data.num_images=20"], "ResNet50_Weights"),
    ],
)
def test_weights_that_cannot_be_downloaded_fail_in_one_sentence(tmp_path, overrides, weights):
    result = run_script("train.py", *overrides, "trainer.max_steps=1", cwd=tmp_path, env=NO_NETWORK)
    message = _one_line_error(result)
    assert "Could not download torchvision's" in message and weights in message
    assert "hub/checkpoints/" in message and "model.pretrained=null" in message


@pytest.mark.skipif(not (SHARED_DATA / "imagenette2_sample").is_dir(), reason="no shared data")
def test_deit_on_a_wnid_named_image_folder_derives_the_teachers_classes(tmp_path):
    root = SHARED_DATA / "imagenette2_sample"
    result = run_script(
        "train.py",
        "model=deit",
        "data=imagefolder",
        f"data.root={root}",
        "trainer.max_steps=1",
        cwd=tmp_path,
        env=NO_NETWORK,
    )
    message = _one_line_error(result)
    assert "class_indices" not in message  # derived from the wnid folders
    assert "Could not download torchvision's RegNet_Y_16GF_Weights" in message
    assert "model.distillation=none" in message
