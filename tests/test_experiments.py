"""The shipped experiment recipes run (shrunk to seconds with overrides)."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import (
    compose_train,
    run_script,
    small_model_overrides,
    tiny_overrides,
    write_imagenette_tree,
)

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.images.imagenette import IMAGENETTE_CLASSES
from glimpse.data.spec import DataSpec
from glimpse.run import train
from glimpse.tasks.acceleration import build_task


def test_rnn_vs_transformer_sweeps_all_four_models(corpus, tmp_path):
    overrides = [o for o in tiny_overrides(corpus, tmp_path) if not o.startswith("model.")]
    result = run_script(
        "train.py", "experiment=rnn_vs_transformer", *overrides, "debug=fdr", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "logs" / "debug" / "multiruns").iterdir())
    configs = [
        yaml.safe_load((sweep / str(job) / "config_resolved.yaml").read_text()) for job in range(4)
    ]
    targets = [c["model"]["net"]["_target_"].rsplit(".", 1)[1] for c in configs]
    assert targets == ["CharRNN", "CharRNN", "CharRNN", "CharTransformer"]
    assert [c["model"]["net"].get("cell") for c in configs[:3]] == ["rnn", "lstm", "gru"]
    assert configs[3]["data"]["batching"] == "windows"
    assert all(c["data"]["corpus"] == "text" for c in configs)


def test_cpu_experiments_train_when_shrunk(corpus, tmp_path):
    for experiment, model in (
        ("shakespeare_lstm_cpu", "lstm"),
        ("shakespeare_transformer_baby", "transformer"),
    ):
        result = run_script(
            "train.py",
            f"experiment={experiment}",
            *tiny_overrides(corpus, tmp_path),
            *small_model_overrides(model),
            "debug=fdr",
            cwd=tmp_path,
        )
        assert result.returncode == 0, (experiment, result.stderr[-3000:])


IMAGENETTE_RECIPES = {
    "imagenette_vit": "glimpse.models.vit.vit_small_patch16",
    "imagenette_deit": "glimpse.models.deit.deit_small_distilled_patch16",
    "imagenette_pvt": "glimpse.models.pvt.pvt_small",
    "imagenette_swin": "glimpse.models.swin.swin_tiny",
    "imagenette_resnet": "glimpse.models.resnet.resnet",
}


@pytest.mark.parametrize(("experiment", "net"), IMAGENETTE_RECIPES.items())
def test_imagenette_recipes_build_their_model_for_one_gpu(experiment, net, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.model.net._target_ == net
    assert cfg.data._target_ == "glimpse.data.images.imagenette.ImagenetteDataModule"
    assert (cfg.data.dataset, cfg.data.image_size) == ("imagenette", 128)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.model.mixup_alpha == 0.8 and cfg.model.cutmix_alpha == 1.0
    assert cfg.trainer.max_steps == 200 * 74  # 200 epochs of 9,469 images in batches of 128
    spec = DataSpec(
        kind=LABELLED_IMAGES,
        class_names=tuple(IMAGENETTE_CLASSES.values()),
        image_size=cfg.data.image_size,
    ).to_dict()
    task = build_task(cfg.model, spec).eval()
    assert task(torch.randn(1, 3, 128, 128)).shape == (1, 10)


def test_the_image_sweep_trains_vit_swin_and_pvt_on_imagenette(tmp_path):
    tree = write_imagenette_tree(tmp_path / "imagenette2-160", IMAGENETTE_CLASSES)
    result = run_script(
        "train.py",
        "-m",
        "model=vit,swin,pvt",
        "data=imagenette",
        f"data.root={tree}",
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "debug=fdr",
        "logger=csv",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "logs" / "debug" / "multiruns").iterdir())
    configs = [
        yaml.safe_load((sweep / str(job) / "config_resolved.yaml").read_text()) for job in range(3)
    ]
    assert [c["model"]["net"]["_target_"] for c in configs] == [
        "glimpse.models.vit.vit_tiny_patch16",
        "glimpse.models.swin.swin_tiny",
        "glimpse.models.pvt.pvt_small",
    ]
    assert all(c["data"]["root"] == str(tree) for c in configs)


def test_shapes_vit_cpu_recipe_trains_when_shrunk(tmp_path):
    result = run_script(
        "train.py",
        "experiment=shapes_vit_cpu",
        "data.num_per_class=5",
        "data.batch_size=8",
        "debug=fdr",
        "logger=csv",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = list((tmp_path / "logs" / "debug" / "runs").iterdir())
    config = yaml.safe_load((run / "config_resolved.yaml").read_text())
    assert config["model"]["net"]["_target_"] == "glimpse.models.vit.vit_nano_conv"
    assert config["data"]["image_size"] == 48 and config["data"]["scale"] == [0.8, 1.0]
    assert (tmp_path / "data" / "shapes_48_0_n5_d2").is_dir()


def test_shapes_captions_cpu_recipe_trains_show_attend_tell_when_shrunk(tmp_path):
    overrides = [
        "experiment=shapes_captions_cpu",
        "data.num_images=24",
        "data.batch_size=8",
        "debug=fdr",
        "logger=csv",
    ]
    cfg = compose_train(overrides, tmp_path / "run")
    assert cfg.model.decoder._target_ == "glimpse.models.captioning.ShowAttendTell"
    assert (cfg.model.encoder.arch, cfg.model.encoder.stages) == ("resnet18", 3)
    assert cfg.model.pretrained is None and cfg.model.fine_tune_encoder_from_epoch == 0
    assert 0.0 <= train(cfg) <= 1.0
    assert (tmp_path / "data" / "shapes_captions_64_0_n24_s3").is_dir()


@pytest.mark.parametrize(
    ("experiment", "decoder", "stages"),
    [("flickr8k_show_tell", "ShowTell", 4), ("flickr8k_show_attend_tell", "ShowAttendTell", 3)],
)
def test_flickr8k_recipes_cache_frozen_imagenet_features_on_one_gpu(
    experiment, decoder, stages, tmp_path
):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.model.decoder._target_ == f"glimpse.models.captioning.{decoder}"
    assert (cfg.model.encoder.arch, cfg.model.encoder.stages) == ("resnet101", stages)
    assert cfg.model.pretrained == "torchvision" and cfg.model.fine_tune_encoder_from_epoch is None
    assert cfg.data._target_ == "glimpse.data.captions.flickr8k.Flickr8kDataModule"
    assert cfg.data.cache_features and cfg.data.hflip == 0
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.optimized_metric == "val/bleu4" and cfg.task_name == experiment


def test_detr_recipes_compose_for_coco_fine_tuning_and_the_cpu(tmp_path):
    coco = compose_train(["experiment=coco_detr_r50"], tmp_path)
    assert coco.model.net._target_ == "glimpse.models.detr.detr_r50"
    assert coco.model.pretrained == "torchvision" and coco.trainer.gradient_clip_val == 0.1
    assert (coco.trainer.accelerator, coco.trainer.precision) == ("gpu", "bf16-mixed")
    assert coco.data._target_ == "glimpse.data.detection.coco.CocoDetectionDataModule"
    paths = [
        "data.root=/data/mine",
        "data.train_images=images/train",
        "data.train_annotations=train.json",
        "data.val_images=images/val",
        "data.val_annotations=val.json",
    ]
    tune = compose_train(
        ["experiment=detr_finetune", "model.init_from=detr.ckpt", *paths], tmp_path
    )
    assert tune.model.init_from == "detr.ckpt" and tune.model.pretrained is None
    assert tune.data.root == "/data/mine"
    cpu = compose_train(["experiment=shapes_detr_cpu"], tmp_path)
    assert cpu.model.net._target_ == "glimpse.models.detr.detr_small"
    assert cpu.data._target_ == "glimpse.data.synthetic.datamodules.ShapesDetectionDataModule"


def test_shapes_detr_cpu_recipe_trains_when_shrunk(tmp_path):
    overrides = [
        "experiment=shapes_detr_cpu",
        "data.num_images=20",
        "data.batch_size=4",
        "data.image_size=64",
        "debug=fdr",
        "logger=csv",
    ]
    assert 0.0 <= train(compose_train(overrides, tmp_path / "run")) <= 1.0
