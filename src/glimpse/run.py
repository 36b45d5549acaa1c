"""Composing a run from a Hydra config: what ``train.py`` and ``eval.py`` call."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from glimpse.callbacks.caption_figures import attention_figure
from glimpse.callbacks.detection_figures import detection_figure
from glimpse.callbacks.figures import save_figure
from glimpse.callbacks.ssl_figures import attention_map_files
from glimpse.data.detection.transforms import eval_transform as detection_eval_transform
from glimpse.data.download import DownloadError
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.transforms import eval_transform
from glimpse.data.text.corpora import CorpusError
from glimpse.evaluation import run_evaluation
from glimpse.run_folder import write_result
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.compatibility import IncompatibleConfigError, check_compatible
from glimpse.utils.console import console, print_config_tree, print_metrics
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
    console.print(f"Run directory: {output_dir}")


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
    value of ``cfg.optimized_metric`` (for Optuna sweeps), or None when it was not logged."""
    output_dir = Path(cfg.paths.output_dir)
    check_compatible(
        cfg.model._target_, cfg.data._target_, _config_dir(), (_choice("model"), _choice("data"))
    )
    _announce(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = instantiate(cfg.model, spec=datamodule.spec.to_dict(), _recursive_=False)
    task.run_config = OmegaConf.to_container(cfg, resolve=True)

    loggers = build_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg.get("callbacks")), logger=loggers or False
    )
    for logger in loggers:
        logger.log_hyperparams(task.run_config)

    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
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


def classify_images(
    task: Any, paths: list[str], crop_ratio: float, k: int
) -> list[tuple[str, list[tuple[str, float]]]]:
    """Print and return the top-``k`` classes of each image file, decoded and resized and
    centre-cropped as the checkpoint's evaluation data was (the spec's size and normalisation)."""
    _check_image_files(paths)
    spec = task.spec
    transform = eval_transform(spec.image_size, crop_ratio, spec.mean, spec.std)
    images = torch.stack([transform(open_rgb(path)) for path in paths])
    predictions = list(zip(paths, task.classify(images, k), strict=True))
    for path, ranked in predictions:
        print(path, flush=True)
        for name, probability in ranked:
            print(f"  {probability:7.2%}  {name}", flush=True)
    return predictions


def caption_images(
    task: Any, paths: list[str], crop_ratio: float, figure_dir: Path
) -> list[tuple[str, str]]:
    """Print and return a caption of each image file (decoded, resized and centre-cropped as the
    checkpoint's evaluation data was) and, for attention models, save the figure of the
    attention over the image for every word as ``figure_dir/<file stem>_attention.png``."""

    _check_image_files(paths)
    spec = task.spec
    transform = eval_transform(spec.image_size, crop_ratio, spec.mean, spec.std)
    plain_view = eval_transform(spec.image_size, crop_ratio, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    images = torch.stack([transform(open_rgb(path)) for path in paths])
    results = []
    for path, generated in zip(paths, task.caption(images), strict=True):
        text = " ".join(generated.words)
        print(f"{path}: {text}", flush=True)
        results.append((path, text))
        if generated.attention is not None:
            pixels = plain_view(open_rgb(path)).permute(1, 2, 0).numpy()
            figure = attention_figure(pixels, generated.words, generated.attention)
            target = figure_dir / f"{Path(path).stem}_attention.png"
            save_figure(figure, target)
            print(f"  attention figure: {target}", flush=True)
    return results


def detect_images(task: Any, paths: list[str], figure_dir: Path) -> list[tuple[str, list]]:
    """Print and return each image file's detections (resized as the checkpoint's evaluation
    data was, boxes in the file's own pixels) and save a picture of them as
    ``figure_dir/<file stem>_detections.png``."""

    _check_image_files(paths)
    spec = task.spec
    transform = detection_eval_transform(
        spec.metadata["eval_scale"], spec.metadata["max_size"], spec.mean, spec.std
    )
    results = []
    for path in paths:
        image = open_rgb(path)
        pixels = transform(image)
        mask = torch.zeros(1, *pixels.shape[1:], dtype=torch.bool)
        size = torch.tensor([[image.height, image.width]])
        found = task.detect(pixels[None], mask, size)[0]
        print(f"{path}: {len(found['names'])} detections", flush=True)
        listed = []
        for name, score, box in zip(found["names"], found["scores"], found["boxes"], strict=True):
            corners = [round(v, 1) for v in box.tolist()]
            print(f"  {score:6.1%}  {name}  {corners}", flush=True)
            listed.append((name, float(score), corners))
        picture = np.asarray(image, dtype=np.float32) / 255.0
        figure = detection_figure(picture, found["boxes"], found["names"], found["scores"], path)
        target = save_figure(figure, figure_dir / f"{Path(path).stem}_detections.png")
        print(f"  figure: {target}", flush=True)
        results.append((path, listed))
    return results


def _check_image_files(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Image {path} does not exist; pass image=/path/to/photo.jpg.")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on its data's test split and, for generative tasks, sample from it;
    for classifiers and captioners given ``image=`` (one path or a list), classify or caption
    those files instead; with ``eval=NAME`` run that evaluation (:mod:`glimpse.evaluation`:
    linear probe, kNN, zero-shot, retrieval) instead of the test split.

    Without ``data=`` on the command line the data config stored in the checkpoint is used.
    When that data is not on disk (and cannot be downloaded) the evaluation is skipped with a
    message saying why, and sampling still runs: the checkpoint holds the vocabulary.
    """
    L.seed_everything(cfg.seed, workers=True)
    task, meta = load_task(cfg.ckpt_path)
    console.print(f"Loaded {meta['task']} from {cfg.ckpt_path} (code {meta['code_version']})")
    results: dict[str, Any] = {}
    if hasattr(task, "set_decoding"):
        task.set_decoding(cfg.get("beam_size"), cfg.get("length_penalty"))

    data_cfg = cfg.get("data") or OmegaConf.create((meta.get("config") or {}).get("data"))
    if cfg.get("image"):
        image = cfg.image
        paths = [str(image)] if isinstance(image, str) else [str(p) for p in image]
        crop_ratio = float((data_cfg or {}).get("crop_ratio", 0.875))
        figure_dir = Path(cfg.paths.output_dir) / "figures"
        if hasattr(task, "caption"):
            results["captions"] = caption_images(task, paths, crop_ratio, figure_dir)
        elif hasattr(task, "detect"):
            results["detections"] = detect_images(task, paths, figure_dir)
        elif hasattr(task, "feature_network"):
            results["attention_maps"] = attention_map_files(task, paths, crop_ratio, figure_dir)
        elif hasattr(task, "classify"):
            results["predictions"] = classify_images(task, paths, crop_ratio, cfg.num_classes_shown)
        else:
            raise ValueError(f"{meta['task']} does not work on image files; drop image=.")
        return results
    if cfg.get("eval"):
        results = run_evaluation(cfg.eval, task, data_cfg, cfg)
        print_metrics(results, title=f"eval={cfg.eval} of {cfg.ckpt_path}")
        return results
    if cfg.get("metrics", True) and data_cfg:
        datamodule = instantiate(data_cfg)
        try:
            datamodule.prepare_data()
            datamodule.setup("test")
        except (CorpusError, DownloadError) as error:
            console.print(f"[yellow]Test split not evaluated:[/yellow] {error}")
        else:
            trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
            trainer.test(task, datamodule=datamodule)
            results = {k: float(v) for k, v in trainer.callback_metrics.items()}
            print_metrics(results, title=f"test metrics of {cfg.ckpt_path}")

    if hasattr(task, "generate") and cfg.get("num_chars", 0) > 0:
        prompt = cfg.get("prompt") or "\n"
        text = task.generate(
            prompt, cfg.num_chars, cfg.temperature, cfg.get("top_k"), seed=cfg.seed
        )
        results["sample"] = prompt + text
        print(prompt + text, flush=True)
    return results
