"""The CLIP task: what the spec fills in, the loss and logit-scale clamp, retrieval and
zero-shot validation against direct computations, decay groups, zero-shot prediction."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from _helpers_clip import CAPTIONS, TINY_NET, clip_spec, tiny_clip_overrides
from _helpers_clip import ZEROSHOT_CLASSES as CLASSES
from conftest import compose_train, randomize_parameters
from torch.utils.data import DataLoader

from glimpse.batches import IMAGE_TEXT, ImageTextPairs, LabelledImages
from glimpse.data.spec import DataSpec
from glimpse.data.text.bpe import BPETokenizer
from glimpse.metrics.retrieval import retrieval_recalls
from glimpse.models.clip_loss import clip_loss
from glimpse.models.zeroshot import zero_shot_classifier
from glimpse.optim.param_groups import decay_groups
from glimpse.run import train
from glimpse.tasks.acceleration import build_task
from glimpse.tasks.clip import CLIPTask


def clip_task(spec: dict | None = None, **kwargs) -> CLIPTask:
    """The tiny CLIP with random weights large enough that embeddings spread (no near-ties in
    the rankings)."""
    task = CLIPTask(
        spec=spec or clip_spec(),
        net=TINY_NET,
        optimizer={"lr": 1e-3, "weight_decay": 0.2, "betas": [0.9, 0.98], "eps": 1e-6},
        scheduler={"warmup_steps": 2, "min_lr_ratio": 0.0},
        **kwargs,
    )
    randomize_parameters(task.net, seed=0, std=0.3)
    with torch.no_grad():
        task.net.logit_scale.fill_(math.log(1 / 0.07))
    return task


def test_vocabulary_context_length_and_image_size_come_from_the_spec():
    spec = clip_spec(image_size=48, context_length=12)
    task = clip_task(spec)
    vocab_size = BPETokenizer.from_dict(spec["tokenizer"]).vocab_size
    assert task.net.text.token_embedding.num_embeddings == vocab_size
    assert task.net.context_length == 12 and task.net.image_size == (48, 48)
    tokens = task.tokenize(["a red circle", "a blue square on a navy background"])
    assert tokens.shape == (2, 12) and tokens.dtype == torch.long
    assert task.image_features(torch.randn(3, 3, 48, 48)).shape == (3, 16)
    with pytest.raises(ValueError, match="needs a spec with a tokenizer"):
        clip_task({**spec, "tokenizer": None})


def _pairs(task: CLIPTask, images: torch.Tensor, texts: list[str], ids: list[int]):
    return ImageTextPairs(images, task.tokenize(texts), tuple(texts), torch.tensor(ids))


def test_training_step_is_the_contrastive_loss_and_the_scale_is_clamped_after_it():
    task = clip_task()
    images = torch.randn(4, 3, 32, 32)
    batch = _pairs(task, images, CAPTIONS, [0, 1, 2, 3])
    task.log = lambda *args, **kwargs: None
    loss = task.training_step(batch, 0)
    image_emb, text_emb, scale = task.net(batch.images, batch.tokens)
    torch.testing.assert_close(loss, clip_loss(image_emb, text_emb, scale))
    assert scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        task.net.logit_scale.fill_(7.0)
    assert task.net.scale().item() == pytest.approx(100.0)  # the cap applies in forward too
    task.on_train_batch_end(loss, batch, 0)
    assert task.net.logit_scale.item() == pytest.approx(math.log(100))


def test_decay_groups_spare_logit_scale_embeddings_biases_and_norms():
    task = clip_task()
    decayed, plain = decay_groups(task, weight_decay=0.2)
    names = {id(p): name for name, p in task.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    for name in (
        "net.logit_scale",
        "net.text.token_embedding.weight",
        "net.text.positional_embedding",
        "net.visual.trunk.pos_embed",
        "net.visual.trunk.cls_token",
        "net.text.ln_final.weight",
    ):
        assert name in plain_names, name
    assert "net.text.proj.weight" in decayed_names and "net.visual.proj.weight" in decayed_names
    assert all(p.ndim >= 2 for p in decayed["params"])


def _validation_loaders(task: CLIPTask, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    # Six images with two captions each, in batches of 5 (pairs of one image split between
    # batches), and eight labelled images in batches of 3.
    texts = [f"a {colour} {kind}" for colour in ("red", "blue", "pink") for kind in CLASSES]
    ids = [i // 2 for i in range(12)]
    pairs = [
        _pairs(task, images[ids[s : s + 5]], texts[s : s + 5], ids[s : s + 5])
        for s in range(0, 12, 5)
    ]
    labelled_images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.randint(len(CLASSES), (8,), generator=generator)
    labelled = [
        LabelledImages(labelled_images[s : s + 3], labels[s : s + 3]) for s in range(0, 8, 3)
    ]
    loaders = [DataLoader(pairs, batch_size=None), DataLoader(labelled, batch_size=None)]
    return loaders, (images, texts, ids), (labelled_images, labels)


def _trainer() -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_validation_recalls_and_zero_shot_accuracy_equal_direct_computations():
    task = clip_task()
    loaders, (images, texts, ids), (labelled_images, labels) = _validation_loaders(task)
    metrics = _trainer().validate(task, dataloaders=loaders, verbose=False)[0]
    task.eval()
    with torch.no_grad():
        image_emb = task.image_features(images)
        text_emb = task.net.encode_text(task.tokenize(texts), normalize=True)
        expected = retrieval_recalls(image_emb, text_emb, torch.tensor(ids), (1, 5, 10))
        weights = zero_shot_classifier(task.net.encode_text, task.tokenize, CLASSES, task.templates)
        logits = task.image_features(labelled_images) @ weights
    for name, value in expected.items():
        assert metrics[f"val/{name}"] == pytest.approx(value), name
    acc1 = (logits.argmax(dim=1) == labels).float().mean().item()
    ranked = logits.topk(4, dim=1).indices
    acc4 = (ranked == labels[:, None]).any(dim=1).float().mean().item()
    assert metrics["val/zeroshot_acc1"] == pytest.approx(acc1)
    assert metrics["val/zeroshot_acc5"] == pytest.approx(acc4) == 1.0  # top-4 of 4 classes
    assert math.isfinite(metrics["val/loss"])


def test_zero_shot_runs_every_n_validations():
    task = clip_task(zeroshot={"every_n_validations": 2})
    loaders, _, _ = _validation_loaders(task)
    trainer = _trainer()
    logged = [
        "val/zeroshot_acc1" in trainer.validate(task, dataloaders=loaders, verbose=False)[0]
        for _ in range(3)
    ]
    assert logged == [True, False, True]


def test_configured_templates_are_used_and_checked():
    task = clip_task(zeroshot={"templates": "two", "template_sets": {"two": ["a {}", "{}s"]}})
    assert task.templates == ["a {}", "{}s"]
    weights = task.zero_shot_weights(CLASSES)
    other = task.zero_shot_weights(CLASSES, templates=["a picture of a {}"])
    assert weights.shape == (16, 4) and not torch.allclose(weights, other)
    with pytest.raises(ValueError, match="'nope' is not known"):
        clip_task(zeroshot={"templates": "nope"})


def test_classify_ranks_the_zero_shot_classes():
    task = clip_task()
    images = torch.randn(2, 3, 32, 32)
    ranked = task.classify(images, k=3)
    assert [len(row) for row in ranked] == [3, 3]
    with torch.no_grad():
        weights = task.zero_shot_weights(CLASSES)
        probabilities = (task.net.scale() * task.image_features(images) @ weights).softmax(-1)
    top = probabilities[0].argmax().item()
    assert ranked[0][0] == (CLASSES[top], pytest.approx(probabilities[0, top].item()))
    with pytest.raises(ValueError, match="names no classes"):
        clip_task(clip_spec(zeroshot_classes=None)).classify(images)


def test_without_zero_shot_classes_validation_reports_recalls_only():
    task = clip_task(clip_spec(zeroshot_classes=None))
    loaders, _, _ = _validation_loaders(task)
    metrics = _trainer().validate(task, dataloaders=loaders[0], verbose=False)[0]
    recalls = {f"val/{d}_recall{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert set(metrics) == {"val/loss", "val/recall_mean", *recalls}


def test_fast_dev_run_on_shapes_pairs_logs_loss_recalls_and_zero_shot_accuracy(tmp_path):
    cfg = compose_train([*tiny_clip_overrides(tmp_path), "debug=fdr"], tmp_path / "run")
    assert (cfg.optimized_metric, cfg.optimized_mode) == ("val/recall_mean", "max")
    value = train(cfg)
    assert 0.0 <= value <= 1.0
    (pairs,) = (tmp_path / "data").glob("shapes_pairs_32_*/pairs.csv")
    assert len(pairs.read_text().splitlines()) == 1 + 40


def test_the_cpu_recipe_trains_when_shrunk_and_optimises_zero_shot_accuracy(tmp_path):
    overrides = ["experiment=shapes_clip_cpu", *tiny_clip_overrides(tmp_path), "debug=fdr"]
    cfg = compose_train(overrides, tmp_path / "run")
    assert (cfg.optimized_metric, cfg.optimized_mode) == ("val/zeroshot_acc1", "max")
    assert cfg.model.zeroshot.templates == "kinds"
    assert cfg.data._target_ == "glimpse.data.synthetic.datamodules.ShapesPairsDataModule"
    assert cfg.data.source.captions == "kinds"
    assert 0.0 <= train(cfg) <= 1.0


def test_the_cc3m_recipe_builds_clip_vit_b32_with_clips_tokenizer(tmp_path):
    cfg = compose_train(["experiment=cc3m_clip_vit_b32"], tmp_path)
    assert cfg.data.format == "webdataset" and cfg.data.tokenizer == "clip"
    assert cfg.data.zeroshot._target_ == "glimpse.data.images.imagenette.ImagenetteDataModule"
    assert cfg.data.zeroshot.image_size == 224 and cfg.model.zeroshot.templates == "imagenet"
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.precision) == (
        "ddp",
        8,
        "bf16-mixed",
    )
    tokenizer = BPETokenizer.clip()
    spec = DataSpec(
        kind=IMAGE_TEXT,
        image_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        tokenizer=tokenizer.to_dict(),
        metadata={"context_length": 77, "zeroshot_classes": ["tench", "church"]},
    ).to_dict()
    task = build_task(cfg.model, spec)
    assert task.net.text.token_embedding.num_embeddings == 49408
    assert len(task.templates) == 80
    assert task.image_features(torch.randn(1, 3, 224, 224)).shape == (1, 512)
