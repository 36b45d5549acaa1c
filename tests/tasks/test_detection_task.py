"""The Detector task: COCO evaluation, fine-tuning from a checkpoint, optimizer, runs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_train, run_script, short_run
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import ResNet18_Weights, get_model

from glimpse.batches import DETECTION
from glimpse.data.spec import DataSpec
from glimpse.data.synthetic.shapes import write_coco
from glimpse.metrics.coco_detection import BOX_METRICS, CocoBoxMAP, coco_box_metrics
from glimpse.run import train
from glimpse.tasks.compatibility import IncompatibleConfigError
from glimpse.tasks.detection import Detector
from glimpse.utils.coco import load_coco

NET = {"_target_": "glimpse.models.detr.detr_small", "num_queries": 6}
COSTS = {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0}
WEIGHTS = {"eos_coef": 0.1, "weight_ce": 1.0, "weight_bbox": 5.0, "weight_giou": 2.0}


def tiny_detection_overrides(tmp_path) -> list[str]:
    """A small DETR on 20 shapes scenes of 64 px (16 train, 2 val, 2 test images)."""
    return [
        "model=detr",
        "data=shapes_detection",
        "data.num_images=20",
        "data.image_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.net._target_=glimpse.models.detr.detr_small",
        "model.net.num_queries=6",
        "model.pretrained=null",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def _detector(class_names=("circle", "square"), **options) -> Detector:
    spec = DataSpec(
        kind=DETECTION,
        class_names=tuple(class_names),
        image_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        metadata={"category_ids": [3, 7, 9][: len(class_names)]},
    )
    settings = {"matcher": COSTS, "criterion": WEIGHTS, "pretrained": None, **options}
    optimizer = {"lr": 1e-4, "weight_decay": 1e-4}
    return Detector(spec.to_dict(), NET, optimizer=optimizer, **settings)


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory):
    root = write_coco(tmp_path_factory.mktemp("coco") / "shapes", 12, 64, seed=3)
    return load_coco(root / "annotations" / "instances_train.json")


def _ground_truth_records(coco, shift: float = 0.0, seed: int = 0) -> list[dict]:
    """Every non-crowd box as a detection, moved by ``shift`` of its size, random scores."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for annotation in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = annotation["bbox"]
        records.append(
            {
                "image_id": annotation["image_id"],
                "category_id": annotation["category_id"],
                "bbox": [x + shift * w, y + shift * h, w, h],
                "score": float(torch.rand((), generator=generator)) * 0.5 + 0.5,
            }
        )
    return records


def test_coco_evaluation_scores_the_ground_truth_1_and_moved_boxes_less(shapes_coco):
    image_ids = shapes_coco.getImgIds()
    perfect = coco_box_metrics(shapes_coco, _ground_truth_records(shapes_coco), image_ids)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    moved = coco_box_metrics(shapes_coco, _ground_truth_records(shapes_coco, 0.1), image_ids)
    assert moved["map"] < 0.9 and moved["map_50"] == pytest.approx(1.0)
    nothing = coco_box_metrics(shapes_coco, [], image_ids)
    assert nothing == {name: 0.0 for name in BOX_METRICS}


def test_torchmetrics_mean_average_precision_agrees_with_cocoeval(shapes_coco):
    records = _ground_truth_records(shapes_coco, 0.15, seed=1)
    records += [
        {**r, "category_id": r["category_id"] % 7 + 1, "score": r["score"] / 2}
        for r in records[::3]
    ]
    ours = coco_box_metrics(shapes_coco, records, shapes_coco.getImgIds())
    reference = MeanAveragePrecision(box_format="xywh", iou_type="bbox")
    for image_id in shapes_coco.getImgIds():
        found = [r for r in records if r["image_id"] == image_id]
        truth = shapes_coco.loadAnns(shapes_coco.getAnnIds(imgIds=[image_id]))
        reference.update(
            [
                {
                    "boxes": torch.tensor([r["bbox"] for r in found]).reshape(-1, 4),
                    "scores": torch.tensor([r["score"] for r in found]),
                    "labels": torch.tensor([r["category_id"] for r in found]),
                }
            ],
            [
                {
                    "boxes": torch.tensor([a["bbox"] for a in truth]).reshape(-1, 4),
                    "labels": torch.tensor([a["category_id"] for a in truth]),
                }
            ],
        )
    expected = reference.compute()
    for name in ("map", "map_50", "map_75"):
        assert ours[name] == pytest.approx(float(expected[name]), abs=1e-6), name
    assert 0 < ours["map"] < 1


def test_the_metric_maps_labels_to_category_ids_and_keeps_unscored_images(shapes_coco, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(shapes_coco.dataset))
    metric = CocoBoxMAP(path)
    records = _ground_truth_records(shapes_coco)
    first = shapes_coco.getImgIds()[0]
    metric.update([r for r in records if r["image_id"] != first], shapes_coco.getImgIds())
    values = metric.compute()
    assert set(values) == set(BOX_METRICS) and 0 < float(values["map"]) < 1
    metric.reset()
    metric.update(records, shapes_coco.getImgIds())
    assert float(metric.compute()["map"]) == pytest.approx(1.0)


def test_fine_tuning_keeps_the_queries_and_gives_a_new_class_head(tmp_path):
    source = _detector(("a", "b"))
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = _detector(("a", "b", "c"), init_from=str(path))
    target.setup("fit")
    torch.testing.assert_close(target.net.query_embed.weight, source.net.query_embed.weight)
    torch.testing.assert_close(
        target.net.transformer.decoder[0].norm1.weight,
        source.net.transformer.decoder[0].norm1.weight,
    )
    assert target.net.class_embed.weight.shape == (4, source.net.class_embed.in_features)
    other = Detector(
        target.hparams["spec"],
        {**NET, "num_queries": 9},
        COSTS,
        WEIGHTS,
        {"lr": 1e-4, "weight_decay": 1e-4},
        pretrained=None,
        init_from=str(path),
    )
    with pytest.raises(ValueError, match="another shape"):
        other.setup("fit")


def test_the_backbone_has_its_own_learning_rate_and_both_drop_tenfold():
    task = _detector(backbone_lr=1e-5, lr_drop=0.5)
    task.trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False)
    configured = task.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-5]
    backbone = {id(p) for p in task.net.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == backbone
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-5, 1e-6])


def test_detect_keeps_scores_above_the_threshold_best_first():
    torch.manual_seed(0)
    task = _detector()
    images, mask = torch.randn(2, 3, 64, 48), torch.zeros(2, 64, 48, dtype=torch.bool)
    found = task.detect(images, mask, torch.tensor([[128, 96], [64, 48]]), threshold=0.0)
    assert task.training and len(found) == 2
    for result in found:
        assert len(result["names"]) == 6 and set(result["names"]) <= {"circle", "square"}
        assert torch.all(result["scores"][:-1] >= result["scores"][1:])
    assert found[0]["boxes"].max() <= 128 + 1e-4
    assert task.detect(images, mask, torch.tensor([[64, 48]] * 2), threshold=1.0)[0][
        "boxes"
    ].shape == (0, 4)


def test_fast_dev_run_of_detr_on_shapes_returns_map(tmp_path):
    cfg = compose_train([*tiny_detection_overrides(tmp_path), "debug=fdr"], tmp_path / "run")
    assert cfg.optimized_metric == "val/map" and cfg.trainer.gradient_clip_val == 0.1
    assert 0.0 <= train(cfg) <= 1.0


def test_a_detector_on_captions_names_the_detection_data_configs(tmp_path):
    overrides = [o for o in tiny_detection_overrides(tmp_path) if not o.startswith("data")]
    with pytest.raises(IncompatibleConfigError, match="data=coco, data=cocoformat"):
        train(compose_train([*overrides, "data=shapes_captions", "debug=fdr"], tmp_path / "run"))


@pytest.mark.slow
def test_eval_draws_detections_on_an_image_and_reports_test_map(tmp_path):
    trained = run_script(
        "train.py", *tiny_detection_overrides(tmp_path), *short_run(2), "test=false", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")
    figures = list((tmp_path / "logs").glob("train/runs/*/figures/detections_step*.png"))
    assert figures
    street = sorted((tmp_path / "data").glob("shapes_coco_*/images/val/*.jpg"))[0]
    tested = run_script("eval.py", f"ckpt_path={checkpoint}", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/map" in tested.stderr and "test/map_50" in tested.stderr  # the metrics table
    drawn = run_script("eval.py", f"ckpt_path={checkpoint}", f"image={street}", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert f"{street}: " in drawn.stdout and "detections" in drawn.stdout
    assert list(tmp_path.glob(f"logs/eval/runs/*/figures/{street.stem}_detections.png"))


def test_imagenet_weights_reach_the_backbone_when_fitting_starts(tmp_path, monkeypatch):
    """torchvision's IMAGENET1K_V1 ResNet weights (DETR's), read from its cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    state = get_model("resnet18", weights=None).state_dict()
    state["layer4.1.bn2.running_var"].uniform_(0.5, 2.0)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / Path(ResNet18_Weights.IMAGENET1K_V1.url).name)
    task = _detector(pretrained="torchvision")
    task.setup("fit")
    torch.testing.assert_close(task.net.backbone.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(
        task.net.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"]
    )


def _classifier_checkpoint(path: Path, arch: str = "resnet18", small_images: bool = False) -> dict:
    """A checkpoint file as an image classifier (``model=resnet``) saves it; returns its net."""
    torch.manual_seed(1)
    net = get_model(arch, weights=None, num_classes=7)
    net.layer4[1].bn2.running_mean.uniform_(-1.0, 1.0)
    state = {f"net.{key}": value for key, value in net.state_dict().items()}
    config = {
        "_target_": "glimpse.models.resnet.resnet",
        "arch": arch,
        "small_images": small_images,
    }
    torch.save({"state_dict": state, "hyper_parameters": {"net": config}}, path)
    return net.state_dict()


def test_a_resnet_classifier_checkpoint_starts_the_backbone(tmp_path):
    source = _classifier_checkpoint(tmp_path / "shapes_resnet18.ckpt")
    task = _detector(pretrained=str(tmp_path / "shapes_resnet18.ckpt"))
    task.setup("fit")
    backbone = task.net.backbone.state_dict()
    trunk = {k for k in source if not k.startswith("fc.") and "num_batches" not in k}
    assert set(backbone) == trunk  # frozen BatchNorm keeps no batch count
    for key, value in backbone.items():
        torch.testing.assert_close(value, source[key], msg=key)


def test_a_classifier_of_another_arch_or_stem_is_refused_with_the_fix(tmp_path):
    _classifier_checkpoint(tmp_path / "r34.ckpt", arch="resnet34")
    with pytest.raises(ValueError, match="resnet34 trunk.*needs a resnet18"):
        _detector(pretrained=str(tmp_path / "r34.ckpt")).setup("fit")
    _classifier_checkpoint(tmp_path / "small.ckpt", small_images=True)
    with pytest.raises(ValueError, match="small_images=True.*standard stem"):
        _detector(pretrained=str(tmp_path / "small.ckpt")).setup("fit")
    torch.save({"state_dict": {"net.embedding.weight": torch.zeros(2)}}, tmp_path / "lm.ckpt")
    with pytest.raises(ValueError, match="holds no ResNet trunk"):
        _detector(pretrained=str(tmp_path / "lm.ckpt")).setup("fit")
    with pytest.raises(ValueError, match="neither torchvision, null nor an existing"):
        _detector(pretrained=str(tmp_path / "missing.ckpt"))
