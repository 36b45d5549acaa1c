"""BYOL: the symmetrised loss of the online predictions on the target projections, the paper's
settings in model=byol, training through train.py, and the export of the online backbone to the
image classifier (model.pretrained=PATH)."""

from __future__ import annotations

import pytest
import torch
from _helpers_ssl import byol_task, ssl_spec, tiny_ssl_overrides, views_batch
from conftest import compose_train, short_run, tiny_image_overrides
from torch.nn import functional as F

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.run import train
from glimpse.tasks.acceleration import build_task
from glimpse.tasks.byol import BYOL
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.classification import ImageClassifier
from glimpse.tasks.compatibility import IncompatibleConfigError


def test_the_loss_is_the_symmetrised_regression_on_the_other_views_target():
    task = byol_task()
    views, _ = views_batch(batch=4)
    loss, features = task.ssl_step(views)
    online = [task.student["backbone"](v) for v in views]
    predictions = [task.predictor(task.student["head"](f)) for f in online]
    with torch.no_grad():
        targets = [task.teacher["head"](task.teacher["backbone"](v)) for v in views]

    def regression(p, z):
        return (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(dim=1).mean()

    expected = regression(predictions[0], targets[1]) + regression(predictions[1], targets[0])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features, online[0].detach())
    assert predictions[0].shape == (4, 16) and features.shape == (4, 512)


def test_byol_needs_exactly_two_views():
    views, _ = views_batch(sizes=(32, 32, 16))
    with pytest.raises(ValueError, match="data.views.kind=byol"):
        byol_task().ssl_step(views)


def test_model_byol_has_the_papers_settings(tmp_path):
    cfg = compose_train(["model=byol", "data=ssl_imagenette"], tmp_path)
    model = cfg.model
    assert model._target_ == "glimpse.tasks.byol.BYOL"
    assert (model.optimizer.name, model.optimizer.lr, model.optimizer.lr_batch_size) == (
        "lars",
        0.2,
        256,
    )
    assert model.optimizer.weight_decay == 1.5e-6 and model.optimizer.trust_coefficient == 1e-3
    assert model.teacher_momentum == 0.996 and model.scheduler.min_lr_ratio == 0.0
    assert (model.projector.hidden_dim, model.projector.out_dim) == (4096, 256)
    assert model.predictor.hidden_dim == 4096
    assert cfg.trainer.gradient_clip_val is None
    assert cfg.data.views.kind == "byol"
    assert (cfg.optimized_metric, cfg.optimized_mode) == ("val/knn_acc1", "max")
    task = build_task(model, ssl_spec(image_size=64))
    assert isinstance(task, BYOL) and task.feature_dim == 512


def test_fast_dev_run_of_byol_on_multi_view_shapes(tmp_path):
    cfg = compose_train([*tiny_ssl_overrides(tmp_path, "byol"), "debug=fdr"], tmp_path / "run")
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0


def _train_byol_checkpoint(tmp_path):
    run_dir = tmp_path / "ssl"
    cfg = compose_train([*tiny_ssl_overrides(tmp_path, "byol"), *short_run(2)], run_dir)
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def _classifier(net: dict, pretrained: str) -> ImageClassifier:
    spec = DataSpec(
        kind=LABELLED_IMAGES, class_names=tuple(f"c{i}" for i in range(5)), image_size=32
    ).to_dict()
    return ImageClassifier(
        spec=spec,
        net=net,
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 0.1},
        image_size_arg=None,
        pretrained=pretrained,
        figures=None,
    )


def test_the_online_backbone_exports_to_the_classifier_with_a_fresh_head(tmp_path):
    checkpoint = _train_byol_checkpoint(tmp_path)
    task, meta = load_task(checkpoint)
    assert meta["task"] == "glimpse.tasks.byol.BYOL"
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    for key, value in task.state_dict().items():
        assert torch.equal(value, state[key]), key

    # The run's backbone is torchvision's resnet18, the classifier's glimpse's factory: the
    # same parameters.
    net = {"_target_": "glimpse.models.resnet.resnet", "arch": "resnet18"}
    classifier = _classifier(net, str(checkpoint))
    head = classifier.net.fc.weight.detach().clone()
    classifier.setup("fit")
    online = task.student["backbone"].state_dict()
    loaded = classifier.net.state_dict()
    assert set(loaded) - set(online) == {"fc.weight", "fc.bias"}
    for key, value in online.items():
        assert torch.equal(loaded[key], value), key
    assert not torch.equal(online["conv1.weight"], task.teacher["backbone"].conv1.weight)
    assert torch.equal(classifier.net.fc.weight, head) and classifier.net.fc.out_features == 5

    with pytest.raises(ValueError, match="hold 'conv1.weight', which the network lacks"):
        _classifier({"_target_": "glimpse.models.vit.vit_test"}, str(checkpoint)).setup("fit")
    with pytest.raises(ValueError, match="conv1.weight has shape"):
        _classifier({**net, "small_images": True}, str(checkpoint)).setup("fit")
    with pytest.raises(ValueError, match="not known; use torchvision, the path of a BYOL"):
        _classifier(net, "imagenet")

    overrides = [
        *(o for o in tiny_image_overrides(tmp_path) if not o.startswith("model")),
        "model=resnet",
        "model.net.arch=resnet18",
        f"model.pretrained={checkpoint}",
        "debug=fdr",
    ]
    assert 0.0 <= train(compose_train(overrides, tmp_path / "classifier")) <= 1.0


def test_the_imagenette_recipe_is_lightlys_resnet18_setting_on_one_gpu(tmp_path):
    cfg = compose_train(["experiment=imagenette_byol"], tmp_path)
    assert cfg.data._target_ == "glimpse.data.ssl.multiview.MultiViewDataModule"
    assert (cfg.data.base.variant, cfg.data.base.image_size, cfg.data.batch_size) == (
        "160",
        128,
        256,
    )
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.trainer.max_steps == 800 * 36  # 9,469 images in batches of 256, last one dropped
    assert cfg.model.scheduler.warmup_steps == 10 * 36
    assert cfg.model.optimizer.name == "lars" and cfg.trainer.gradient_clip_val is None
    task = build_task(cfg.model, ssl_spec(image_size=128)).eval()
    assert task.image_features(torch.randn(1, 3, 128, 128)).shape == (1, 512)


def test_byol_on_labelled_images_names_the_multi_view_data_configs(tmp_path):
    overrides = [o for o in tiny_ssl_overrides(tmp_path, "byol") if not o.startswith("data")]
    with pytest.raises(IncompatibleConfigError, match="data=ssl_imagefolder, data=ssl_imagenet"):
        train(compose_train([*overrides, "data=shapes", "debug=fdr"], tmp_path / "run"))
