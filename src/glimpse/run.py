"""Composing a run from a Hydra config: what ``train.py`` and ``eval.py`` call."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from glimpse.callbacks.progress import ProgressBar
from glimpse.data.download import DownloadError
from glimpse.data.prediction_inputs import decode_image_files
from glimpse.data.text.corpora import CorpusError
from glimpse.evaluation import run_evaluation
from glimpse.plotting import save_figure
from glimpse.prediction import INPUT_KEYS, Prediction, PredictionInputs
from glimpse.run_folder import write_result
from glimpse.sweeps.resume import resume_point
from glimpse.tasks.acceleration import CompileSettings, build_task, prepare_for_device
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.compatibility import IncompatibleConfigError, check_compatible
from glimpse.utils.console import console, print_config_tree, print_metrics
from glimpse.utils.interrupt import stop_after_step_on_ctrl_c
from glimpse.utils.wandb_setup import wandb_mode

log = logging.getLogger(__name__)

#: Errors caused by the user's config or files; the CLI prints them as one sentence.
USER_ERRORS = (
    IncompatibleConfigError,
    CorpusError,
    DownloadError,
    FloatingPointError,
    ValueError,
    FileNotFoundError,
)


def _config_dir() -> Path:
    for source in HydraConfig.get().runtime.config_sources:
        if source.provider == "main":
            return Path(source.path.removeprefix("file://"))
    raise RuntimeError("No primary config directory in the Hydra runtime.")


def _choice(group: str) -> str:
    return str(HydraConfig.get().runtime.choices.get(group))


def build_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every logger in the ``logger`` group.

    A WandbLogger with ``offline: null`` runs online when credentials are configured and
    offline otherwise (it never prompts); in a multirun its ``group`` defaults to the sweep
    folder's name, so the runs of one sweep sit together in the wandb UI.
    """
    loggers: list[Logger] = []
    for name, cfg in (logger_cfg or {}).items():
        if not isinstance(cfg, DictConfig) or "_target_" not in cfg:
            continue
        if get_class(cfg._target_) is WandbLogger:
            cfg = cfg.copy()
            with open_dict(cfg):
                if cfg.get("offline") is None:
                    cfg.offline = wandb_mode() == "offline"
                if cfg.get("group") is None and _is_multirun():
                    cfg.group = Path(HydraConfig.get().sweep.dir).name
        log.info("Logger %s: %s", name, cfg._target_)
        loggers.append(instantiate(cfg))
    return loggers


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def build_callbacks(callbacks_cfg: DictConfig | None) -> list[L.Callback]:
    return [
        instantiate(cfg)
        for cfg in (callbacks_cfg or {}).values()
        if isinstance(cfg, DictConfig) and "_target_" in cfg
    ]


@rank_zero_only
def _announce(cfg: DictConfig, output_dir: Path) -> None:
    print_config_tree(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)
    console.print(f"Run directory: {output_dir}", soft_wrap=True)


@rank_zero_only
def _finish_loggers(loggers: list[Logger]) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            offline_dir = Path(logger.experiment.dir).parent
            offline = logger.experiment.settings.mode == "offline"
            logger.experiment.finish()
            if offline:
                console.print(
                    "wandb ran offline (no credentials found). Upload this run with:\n"
                    f"  wandb sync {offline_dir}"
                )


def train(cfg: DictConfig) -> float | None:
    """Fit the task the config names on its data, test the best checkpoint, and return the
    value of ``cfg.optimized_metric`` (for Optuna sweeps), or None when it was not logged.

    A job started again in its own folder (``resume_sweep=``, or requeued by SLURM) returns its
    stored result when it had finished, and otherwise continues from its latest checkpoint
    (:mod:`glimpse.sweeps.resume`)."""
    output_dir = Path(cfg.paths.output_dir)
    check_compatible(
        cfg.model._target_, cfg.data._target_, _config_dir(), (_choice("model"), _choice("data"))
    )
    ckpt_path = cfg.get("ckpt_path")
    resumed = resume_point(cfg, output_dir, in_sweep=_is_multirun())
    if resumed is not None and resumed.result is not None:
        return resumed.result.value
    if resumed is not None and resumed.checkpoint is not None:
        ckpt_path = str(resumed.checkpoint)
    _announce(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)

    compile_settings = CompileSettings.from_model_config(cfg.model)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg.model, datamodule.spec.to_dict())
    task.run_config = OmegaConf.to_container(cfg, resolve=True)

    loggers = build_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg.get("callbacks")), logger=loggers or False
    )
    prepare_for_device(task, trainer.strategy.root_device, compile_settings)
    for logger in loggers:
        logger.log_hyperparams(task.run_config)

    with stop_after_step_on_ctrl_c(trainer) as interrupt:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    if interrupt.requested:
        _finish_loggers(loggers)
        _stopped_by_ctrl_c(trainer, output_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if not best:
            log.warning("No best checkpoint was saved; testing the weights at the end of training.")
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    if trainer.is_global_zero:
        print_metrics(metrics, title="final metrics")
    _finish_loggers(loggers)
    value = metrics.get(cfg.get("optimized_metric"))
    value = None if value is None or math.isnan(value) else value
    if trainer.is_global_zero:
        write_result(output_dir, cfg.get("optimized_metric"), value, metrics)
    return value


def _stopped_by_ctrl_c(trainer: L.Trainer, output_dir: Path) -> None:
    """Say where the interrupted run's state is and how to go on (a sweep: with
    ``resume_sweep=``); exit with status 130."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if _is_multirun():
        how = f"the same command and resume_sweep={HydraConfig.get().sweep.dir}"
    else:
        how = f"the same command and ckpt_path={last}"
    if trainer.is_global_zero:
        console.print(
            f"Stopped by Ctrl-C at step {trainer.global_step}; not tested. The state is in "
            f"{last}: continue with {how}",
            soft_wrap=True,
        )
    sys.exit(130)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint, from the checkpoint alone.

    * With an input (``image=`` one path or a list, ``text=``, ``prompt=``): the task's
      predictions for it (:meth:`~glimpse.tasks.base.GlimpseTask.predict_from`), printed on
      stdout, their figures saved in the eval run's ``figures/``; for a task that predicts
      after its test split (a language model's ``prompt=``), after that test.
    * With ``eval=NAME``: that evaluation (:mod:`glimpse.evaluation`: linear probe, kNN,
      zero-shot, retrieval).
    * Otherwise the test split of the data (the checkpoint's own data config unless ``data=``
      is given), then, for tasks that predict without inputs (a language model's sample), their
      prediction. When the data is not on disk (and cannot be downloaded) the test is skipped
      with a message saying why: the checkpoint holds the vocabulary and class names.
    """
    L.seed_everything(cfg.seed, workers=True)
    task, meta = load_task(cfg.ckpt_path)
    console.print(f"Loaded {meta['task']} from {cfg.ckpt_path} (code {meta['code_version']})")
    task.apply_eval_options(cfg)
    data_cfg = cfg.get("data") or OmegaConf.create((meta.get("config") or {}).get("data"))
    inputs = _prediction_inputs(cfg, task, data_cfg)
    if inputs.given and not task.PREDICTS_AFTER_TEST:
        return {"predictions": _show_predictions(task.predict_from(inputs, cfg), cfg)}
    if cfg.get("eval"):
        results = run_evaluation(cfg.eval, task, data_cfg, cfg)
        print_metrics(results, title=f"eval={cfg.eval} of {cfg.ckpt_path}")
        return results
    results: dict[str, Any] = {}
    if cfg.get("metrics", True) and data_cfg:
        results = _test_split(task, data_cfg, cfg)
    if task.PREDICTS_AFTER_TEST:
        results["predictions"] = _show_predictions(task.predict_from(inputs, cfg), cfg)
    return results


def _prediction_inputs(cfg: DictConfig, task: Any, data_cfg: DictConfig | None) -> PredictionInputs:
    """eval.py's ``image=``, ``text=`` and ``prompt=``, images decoded as the checkpoint's
    evaluation data was."""
    task.check_inputs([key for key in INPUT_KEYS if cfg.get(key)])
    images: tuple = ()
    if cfg.get("image"):
        paths = [str(cfg.image)] if isinstance(cfg.image, str) else [str(p) for p in cfg.image]
        crop_ratio = float((data_cfg or {}).get("crop_ratio", 0.875))
        images = decode_image_files(paths, task.spec, crop_ratio)
    texts: tuple = ()
    if cfg.get("text"):
        texts = (str(cfg.text),) if isinstance(cfg.text, str) else tuple(map(str, cfg.text))
    return PredictionInputs(images=images, texts=texts, prompt=cfg.get("prompt"))


def _show_predictions(predictions: list[Prediction], cfg: DictConfig) -> list[Prediction]:
    """Print each prediction's lines on stdout and save its figures in ``figures/``."""
    figure_dir = Path(cfg.paths.output_dir) / "figures"
    for prediction in predictions:
        for line in prediction.lines:
            print(line, flush=True)
        stem = Path(prediction.source).stem if prediction.figures else ""
        for name, figure in prediction.figures.items():
            target = save_figure(figure, figure_dir / f"{stem}_{name}.png")
            print(f"  figure: {target}", flush=True)
    return predictions


def _test_split(task: Any, data_cfg: DictConfig, cfg: DictConfig) -> dict[str, float]:
    """The test metrics of ``task`` on ``data_cfg``'s test split; empty, with a message, when
    that data is not on disk and cannot be had."""
    datamodule = instantiate(data_cfg)
    try:
        datamodule.prepare_data()
        datamodule.setup("test")
    except (CorpusError, DownloadError) as error:
        console.print(f"[yellow]Test split not evaluated:[/yellow] {error}")
        return {}
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[ProgressBar()])
    trainer.test(task, datamodule=datamodule, verbose=False)
    results = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print_metrics(results, title=f"test metrics of {cfg.ckpt_path}")
    return results
