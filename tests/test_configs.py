"""Every config the project ships composes, and the shipped models are comparable in size."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from glimpse.batches import TEXT
from glimpse.data.spec import DataSpec
from glimpse.models.char_rnn import count_parameters
from glimpse.optim.settings import OptimizerSettings
from glimpse.tasks.acceleration import build_task
from glimpse.tasks.compatibility import (
    IncompatibleConfigError,
    check_compatible,
    data_configs_by_kind,
)

GROUPS = [
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "debug",
    "experiment",
    "hparams_search",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{group}={name}" for group in GROUPS for name in _options(group)] + ["hydra/launcher=slurm"],
)
def test_every_shipped_config_composes_and_resolves(override, tmp_path):
    overrides = [override]
    if override == "data=text":
        overrides.append("data.path=corpus.txt")
    if override == "data=imagefolder":
        overrides.append("data.root=images")
    cfg = compose_train(overrides, tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.model._target_ and cfg.data._target_ and cfg.trainer._target_


@pytest.mark.parametrize(
    "override",
    [f"{group}={name}" for group in ("model", "experiment") for name in _options(group)],
)
def test_every_shipped_optimizer_reads_in_the_one_dialect(override, tmp_path):
    cfg = compose_train([override], tmp_path)
    settings = OptimizerSettings.from_config(OmegaConf.to_container(cfg.model.optimizer))
    assert settings.lr > 0 and settings.name in ("adamw", "lars")


def test_eval_config_composes_with_and_without_data(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = compose("eval", overrides=["ckpt_path=x.ckpt"])
        with_data = compose("eval", overrides=["ckpt_path=x.ckpt", "data=shakespeare"])
    assert plain.get("data") is None
    assert with_data.data.corpus == "shakespeare"


def test_slurm_launcher_config_uses_submitit():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_shipped_models_have_comparable_parameter_counts(tmp_path):
    spec = DataSpec(kind=TEXT, vocab=("\ufffd", *(chr(32 + i) for i in range(65))))
    counts = {}
    for model in ("rnn", "lstm", "gru", "transformer"):
        cfg = compose_train([f"model={model}"], tmp_path)
        task = build_task(cfg.model, spec.to_dict())
        counts[model] = count_parameters(task.net)
    low, high = min(counts.values()), max(counts.values())
    assert high / low < 1.1, counts


def test_data_configs_are_indexed_by_the_kind_they_yield():
    kinds = data_configs_by_kind(CONF)
    assert kinds[TEXT] == ["pystdlib", "shakespeare", "text"]


def test_incompatible_pair_names_the_data_configs_that_fit(tmp_path: Path):
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    for name in ("pystdlib", "shakespeare"):
        (conf / "data" / f"{name}.yaml").write_text(
            "_target_: glimpse.data.text.char_text.CharTextDataModule\n"
        )
    (conf / "data" / "images.yaml").write_text("_target_: conftest.ImageDataModuleStandIn\n")
    with pytest.raises(IncompatibleConfigError) as error:
        check_compatible(
            "glimpse.tasks.char_lm.CharLanguageModelTask",
            "conftest.ImageDataModuleStandIn",
            conf,
            ("lstm", "images"),
        )
    message = str(error.value)
    assert "model=lstm" in message and "data=images" in message
    assert "use one of: data=pystdlib, data=shakespeare." in message


def test_compatible_pair_passes():
    check_compatible(
        "glimpse.tasks.char_lm.CharLanguageModelTask",
        "glimpse.data.text.char_text.CharTextDataModule",
        CONF,
        ("lstm", "pystdlib"),
    )


def test_best_checkpoint_and_optuna_follow_the_optimized_metric_and_mode(tmp_path):
    text = compose_train([], tmp_path).callbacks.model_checkpoint
    assert (text.monitor, text.mode) == ("val/loss", "min")
    images = compose_train(["model=vit", "data=shapes"], tmp_path).callbacks.model_checkpoint
    assert (images.monitor, images.mode) == ("val/acc1", "max")
    overfit = compose_train(["model=vit", "debug=overfit"], tmp_path).callbacks.model_checkpoint
    assert (overfit.monitor, overfit.mode) == ("train/loss_epoch", "min")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for mode, direction in (("min", "minimize"), ("max", "maximize")):
            cfg = compose(
                "train",
                overrides=["hparams_search=charlm_optuna", f"optimized_mode={mode}"],
                return_hydra_config=True,
            )
            assert cfg.hydra.sweeper.direction == direction


def test_a_method_sets_its_gradient_clipping_and_the_command_line_still_wins(tmp_path):
    assert compose_train([], tmp_path).trainer.gradient_clip_val == 1.0
    for model, clip in (("show_tell", 5.0), ("show_attend_tell", 5.0), ("detr", 0.1)):
        assert compose_train([f"model={model}"], tmp_path).trainer.gradient_clip_val == clip
        gpu = compose_train([f"model={model}", "trainer=gpu"], tmp_path).trainer
        assert gpu.gradient_clip_val == clip and gpu.precision == "bf16-mixed"
    chosen = compose_train(["model=detr", "trainer.gradient_clip_val=0.5"], tmp_path)
    assert chosen.trainer.gradient_clip_val == 0.5
