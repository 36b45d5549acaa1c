"""train.py and eval.py as a user runs them: subprocesses with no standard input."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    REPO,
    run_script,
    short_run,
    small_model_overrides,
    tiny_image_overrides,
    tiny_overrides,
)


def _tiny(corpus: Path, tmp_path: Path, model: str = "lstm") -> list[str]:
    return [*tiny_overrides(corpus, tmp_path), *small_model_overrides(model)]


def _only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def _train_checkpoint(corpus: Path, tmp_path: Path, *overrides: str) -> Path:
    """Train a tiny LSTM for a few steps through train.py; return its last checkpoint."""
    trained = run_script("train.py", *_tiny(corpus, tmp_path), *overrides, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return _only(list((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")))


def test_eval_samples_from_a_checkpoint_with_the_corpus_deleted(corpus, tmp_path):
    checkpoint = _train_checkpoint(corpus, tmp_path, *short_run(6))
    corpus.unlink()

    result = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        "prompt=the cat",
        "num_chars=40",
        "temperature=0.8",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test split not evaluated" in result.stderr and str(corpus) in result.stderr
    text = result.stdout.strip()
    assert text.startswith("the cat") and len(text) >= len("the cat") + 30


def test_eval_reports_test_metrics_when_the_corpus_is_there(corpus, tmp_path):
    checkpoint = _train_checkpoint(corpus, tmp_path, *short_run(4), "test=false")
    result = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        "num_chars=10",
        "trainer.accelerator=cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/loss" in result.stdout + result.stderr
    assert "test/bpc" in result.stdout + result.stderr


def test_eval_classifies_image_files_with_a_classifier_checkpoint(tmp_path):
    trained = run_script(
        "train.py", *tiny_image_overrides(tmp_path), *short_run(2), "test=false", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt")
    star = next((tmp_path / "data").glob("shapes_*/val/star/*.png"))
    result = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        f"image=[{star},{star}]",
        "num_classes_shown=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == str(star) and len(lines) == 8  # two images, three classes each
    probabilities = [float(line.split("%")[0]) for line in lines[1:4]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100.01
    assert "test/acc1" not in result.stdout + result.stderr
    missing = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        f"image={tmp_path / 'nowhere.jpg'}",
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    message = " ".join(missing.stderr.split())  # the console wraps long lines
    assert f"Image {tmp_path / 'nowhere.jpg'} does not exist" in message


def test_multirun_sweeps_models_into_one_sweep_folder(corpus, tmp_path):
    result = run_script(
        "train.py",
        "-m",
        "model=rnn,gru",
        *_tiny(corpus, tmp_path),
        "debug=fdr",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _only(list((tmp_path / "logs" / "debug" / "multiruns").iterdir()))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    cells = [yaml.safe_load((sweep / j / "config_resolved.yaml").read_text()) for j in jobs]
    assert [c["model"]["net"]["cell"] for c in cells] == ["rnn", "gru"]


def test_optuna_sweep_returns_the_optimised_metric(corpus, tmp_path):
    result = run_script(
        "train.py",
        "hparams_search=charlm_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        *_tiny(corpus, tmp_path),
        *short_run(3),
        "test=false",
        "model.net.hidden_size=choice(8,16)",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _only(list((tmp_path / "logs" / "train" / "multiruns").iterdir()))
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert 0 < results["best_value"] < 10


def test_two_process_cpu_ddp_run_has_one_run_directory_and_one_log(corpus, tmp_path):
    result = run_script(
        "train.py",
        "trainer=ddp_cpu",
        *_tiny(corpus, tmp_path),
        *short_run(4, val_every=2),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only(list((tmp_path / "logs" / "train" / "runs").iterdir()))
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"]
    assert "world_size: 2" in result.stderr or "distributed_backend=gloo" in result.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4


def test_runs_started_in_the_same_second_get_different_folders(corpus, tmp_path):
    args = [sys.executable, str(REPO / "train.py"), *_tiny(corpus, tmp_path), "debug=fdr"]
    start = time.time()
    processes = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert all(p.wait(timeout=300) == 0 for p in processes)
    folders = list((tmp_path / "logs" / "debug" / "runs").iterdir())
    assert len(folders) == 2
    assert time.time() - start < 300


def test_wandb_runs_offline_without_credentials_and_logs_sample_tables(corpus, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    overrides = [o for o in _tiny(corpus, tmp_path) if o != "logger=csv"]
    result = run_script(
        "train.py",
        *overrides,
        "logger=wandb",
        *short_run(4, val_every=2),
        cwd=tmp_path,
        env={"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wandb sync" in result.stdout + result.stderr
    run_dir = _only(list((tmp_path / "logs" / "train" / "runs").iterdir()))
    offline = _only(list((run_dir / "wandb").glob("offline-run-*")))
    tables = list(offline.glob("files/media/table/samples_*.table.json"))
    assert len(tables) == 2  # one per validation


def test_wandb_gets_the_confusion_matrix_and_rollout_images_of_a_vit_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    overrides = [o for o in tiny_image_overrides(tmp_path) if o != "logger=csv"]
    result = run_script(
        "train.py",
        *overrides,
        "logger=wandb",
        *short_run(2, val_every=2),
        cwd=tmp_path,
        env={"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only(list((tmp_path / "logs" / "train" / "runs").iterdir()))
    offline = _only(list((run_dir / "wandb").glob("offline-run-*")))
    media = sorted(p.name.split("_")[0] for p in offline.glob("files/media/images/val/*.png"))
    assert media == ["attention", "confusion"]
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == [
        "attention_rollout_step0000002.png",
        "confusion_matrix_step0000002.png",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.path=/no/such/corpus.txt"], "/no/such/corpus.txt does not exist"),
        (["data.seq_len=100000"], "data.seq_len=100000 is too long for the train split"),
    ],
)
def test_bad_input_fails_before_training_with_one_sentence(corpus, tmp_path, overrides, expected):
    result = run_script("train.py", *_tiny(corpus, tmp_path), *overrides, cwd=tmp_path)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("model", "data", "fitting"),
    [
        (
            "vit",
            "pystdlib",
            "use one of: data=imagefolder, data=imagenet_subset, data=imagenette, "
            "data=imagewoof, data=shapes.",
        ),
        ("lstm", "shapes", "use one of: data=pystdlib, data=shakespeare, data=text."),
    ],
)
def test_a_model_and_data_that_do_not_fit_fail_naming_the_data_that_do(
    tmp_path, model, data, fitting
):
    result = run_script("train.py", f"model={model}", f"data={data}", cwd=tmp_path)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())  # the console wraps long lines
    assert f"model={model}" in message and f"data={data}" in message and fitting in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was generated or downloaded


def test_console_entry_points_are_installed(tmp_path):
    bin_dir = Path(sys.executable).parent
    for command, config in (("glimpse-train", "train"), ("glimpse-eval", "eval")):
        overrides = ["ckpt_path=x.ckpt"] if config == "eval" else []
        result = subprocess.run(
            [str(bin_dir / command), "--cfg", "job", *overrides],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "seed: 1234" in result.stdout
