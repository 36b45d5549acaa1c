"""eval.py on a CLIP checkpoint: zero-shot classification of a generated ImageFolder (with
train/val splits and as a bare folder of class folders), of the checkpoint's own zero-shot
set, image files classified by its zero-shot classes, and image-text retrieval recalls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _helpers_clip import tiny_clip_overrides
from conftest import (
    compose_eval,
    compose_train,
    randomize_parameters,
    run_script,
    short_run,
    working_directory,
)
from hydra.utils import instantiate

from glimpse.data.images.decode import open_rgb
from glimpse.data.synthetic.shapes import KINDS, write_imagefolder
from glimpse.evaluation.zeroshot import check_clip, checkpoint_transform, prompt_names
from glimpse.metrics.retrieval import first_of_each_image, retrieval_recalls
from glimpse.run import evaluate, train
from glimpse.tasks.checkpoints import load_task


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A CLIP trained for 2 steps on shapes pairs, its zero-shot set the shapes classes, then
    given random weights large enough that images get different predictions."""
    tmp_path = tmp_path_factory.mktemp("clip")
    with working_directory(tmp_path):
        overrides = [*tiny_clip_overrides(tmp_path), *short_run(2), "test=false"]
        train(compose_train([*overrides, "trainer.log_every_n_steps=1"], tmp_path))
    path = tmp_path / "checkpoints" / "last.ckpt"
    task, _ = load_task(path)
    randomize_parameters(task.net, seed=1, std=0.3)
    with torch.no_grad():
        task.net.logit_scale.fill_(math.log(1 / 0.07))
    saved = torch.load(path, weights_only=True)
    saved["state_dict"] = task.state_dict()
    torch.save(saved, path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """The 7 shapes classes, 4 images each, in train/ val/ test/ class folders."""
    root = tmp_path_factory.mktemp("folder") / "shapes"
    return write_imagefolder(root, 4, 40, seed=3, splits={"train": 0.5, "val": 0.5})


def _zero_shot_reference(task, folder: Path, names: list[str], templates) -> tuple[float, float]:
    """Top-1 and top-5 accuracy over ``folder/<class>/*`` computed image by image (checking
    that the images are not all given one class)."""
    transform = checkpoint_transform(task)
    task.eval()
    hits1 = hits5 = total = 0
    predicted = set()
    with torch.no_grad():
        weights = task.zero_shot_weights(names, templates)
        for label, kind in enumerate(sorted(KINDS)):
            for path in sorted((folder / kind).iterdir()):
                scores = task.image_features(transform(open_rgb(path))[None]) @ weights
                ranked = scores[0].argsort(descending=True).tolist()
                predicted.add(ranked[0])
                hits1 += ranked[0] == label
                hits5 += label in ranked[:5]
                total += 1
    assert len(predicted) > 1
    return hits1 / total, hits5 / total


def test_eval_py_classifies_a_generated_image_folder_zero_shot(checkpoint, image_folder, tmp_path):
    result = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        "eval=zeroshot",
        "data=imagefolder",
        f"data.root={image_folder}",
        "data.num_workers=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr  # the metrics table goes to the console (stderr)
    task, _ = load_task(checkpoint)
    acc1, acc5 = _zero_shot_reference(task, image_folder / "val", sorted(KINDS), None)
    assert f"zeroshot/acc1 │ {acc1:.4f}" in output and f"zeroshot/acc5 │ {acc5:.4f}" in output


def test_a_bare_folder_with_mapped_names_and_other_templates(checkpoint, image_folder, tmp_path):
    mapping = {"circle": "round disc", "star": "five-pointed star"}
    templates = ["a drawing of a {}", "a {} shape"]
    cfg = compose_eval(
        [
            f"ckpt_path={checkpoint}",
            "eval=zeroshot",
            "data=imagefolder",
            f"data.root={image_folder / 'val'}",
            "data.num_workers=0",
            "zeroshot.class_names={circle:round disc,star:five-pointed star}",
            f"zeroshot.templates=[{','.join(repr(t) for t in templates)}]",
        ],
        tmp_path,
    )
    results = evaluate(cfg)
    task, _ = load_task(checkpoint)
    names = [mapping.get(kind, kind) for kind in sorted(KINDS)]
    acc1, acc5 = _zero_shot_reference(task, image_folder / "val", names, templates)
    assert results == pytest.approx({"zeroshot/acc1": acc1, "zeroshot/acc5": acc5})


def test_without_data_the_checkpoints_own_zero_shot_set_is_classified(checkpoint, tmp_path):
    cfg = compose_eval([f"ckpt_path={checkpoint}", "eval=zeroshot"], tmp_path)
    results = evaluate(cfg)
    assert set(results) == {"zeroshot/acc1", "zeroshot/acc5"}
    assert 0 <= results["zeroshot/acc1"] <= results["zeroshot/acc5"] <= 1


def test_image_files_are_ranked_among_the_zero_shot_classes(checkpoint, image_folder, tmp_path):
    image = next((image_folder / "val" / "star").iterdir())
    cfg = compose_eval([f"ckpt_path={checkpoint}", f"image={image}"], tmp_path)
    (prediction,) = evaluate(cfg)["predictions"]
    path, ranked = prediction.source, prediction.value
    assert path == str(image) and len(ranked) == 5
    assert {name for name, _ in ranked} <= set(KINDS)


def test_retrieval_recalls_on_the_checkpoints_test_pairs(checkpoint, tmp_path):
    cfg = compose_eval(
        [f"ckpt_path={checkpoint}", "eval=retrieval", "retrieval.ks=[1,2]"], tmp_path
    )
    results = evaluate(cfg)
    task, meta = load_task(checkpoint)
    task.eval()
    datamodule = instantiate(dict(meta["config"]["data"], zeroshot=None))
    datamodule.prepare_data()
    datamodule.setup("test")
    images, texts, ids = [], [], []
    with torch.no_grad():
        for batch in datamodule.pairs_loader("test"):
            images.append(task.image_features(batch.images))
            texts.append(task.text_features(task.tokenize(batch.texts)))
            ids.append(batch.image_ids)
    first, text_image = first_of_each_image(torch.cat(ids))
    expected = retrieval_recalls(torch.cat(images)[first], torch.cat(texts), text_image, (1, 2))
    assert results == pytest.approx({f"retrieval/{k}": v for k, v in expected.items()})


def test_non_clip_checkpoints_and_unknown_class_folders_are_refused():
    with pytest.raises(ValueError, match="needs a CLIP checkpoint"):
        check_clip(object(), "zeroshot")
    with pytest.raises(ValueError, match="maps circel, which are not class folders"):
        prompt_names(["circle", "square"], ["circle", "square"], {"circel": "disc"})
    assert prompt_names(["golden_retriever"], ["golden_retriever"], None) == ["golden retriever"]
