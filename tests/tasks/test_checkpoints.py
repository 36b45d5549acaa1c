"""Reading glimpse checkpoints: a task rebuilt from its file, and one sentence naming the file
for each mistake a user can make (no file, not a checkpoint, not a glimpse checkpoint, a
checkpoint without the weights asked for)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.errors import CheckpointError, MissingFileError
from glimpse.models.vit import vit_test
from glimpse.tasks.checkpoints import load_backbone, load_task, read_checkpoint
from glimpse.tasks.classification import ImageClassifier

NET = {"_target_": "glimpse.models.vit.vit_test"}


def _save_classifier(path: Path) -> ImageClassifier:
    """A glimpse checkpoint as train.py writes it (the task's ``on_save_checkpoint`` entry)."""
    torch.manual_seed(3)
    spec = DataSpec(kind=LABELLED_IMAGES, class_names=("a", "b", "c"), image_size=32)
    task = ImageClassifier(
        spec=spec.to_dict(),
        net=NET,
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 0.1},
        figures=None,
    )
    checkpoint = {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return task.eval()


def test_a_task_is_rebuilt_from_its_checkpoint_alone(tmp_path):
    saved = _save_classifier(tmp_path / "classifier.ckpt")
    task, meta = load_task(tmp_path / "classifier.ckpt")
    assert meta["task"] == "glimpse.tasks.classification.ImageClassifier"
    assert type(task) is ImageClassifier and task.spec.class_names == ("a", "b", "c")
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(task.eval()(images), saved(images))


def test_a_missing_file_names_the_option_and_the_path(tmp_path):
    path = tmp_path / "nowhere.ckpt"
    with pytest.raises(MissingFileError, match=f"model.init_from={path} does not exist"):
        read_checkpoint(path, option="model.init_from")


def test_a_file_that_is_no_checkpoint_is_refused_naming_it(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=f"ckpt_path={path} is not a readable PyTorch"):
        load_task(path)
    torch.save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint"):
        load_task(tmp_path / "list.ckpt")


def test_a_lightning_checkpoint_without_the_glimpse_entry_is_refused(tmp_path):
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="is not a glimpse checkpoint"):
        load_task(tmp_path / "plain.ckpt")


def test_a_classifier_checkpoint_has_no_backbone_to_export(tmp_path):
    _save_classifier(tmp_path / "classifier.ckpt")
    with pytest.raises(CheckpointError, match="ImageClassifier checkpoint, which has no"):
        load_backbone(vit_test(num_classes=3), NET, tmp_path / "classifier.ckpt")
