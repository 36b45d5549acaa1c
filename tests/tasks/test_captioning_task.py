"""The Captioner task: its loss, encoder freezing and fine-tuning, decoding, metrics and runs."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_train, run_script, short_run, tiny_caption_overrides
from hydra.utils import instantiate
from torchvision.models import get_model, get_model_weights

from glimpse.batches import CAPTIONED_IMAGES, CaptionedImages
from glimpse.data.spec import DataSpec
from glimpse.data.text.word_tokenizer import SPECIALS
from glimpse.models.captioning import doubly_stochastic_penalty
from glimpse.run import train
from glimpse.tasks.acceleration import build_task
from glimpse.tasks.captioning import Captioner, caption_cross_entropy
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.compatibility import IncompatibleConfigError

WORDS = ("a", "red", "blue", "circle", "square", "on", "the", "left", "right")
ENCODER = {"_target_": "glimpse.models.captioning.CaptionEncoder", "arch": "resnet18"}
SMALL = {"embed_dim": 8, "hidden_size": 16, "dropout": 0.0}
DECODERS = {
    "show_tell": {"_target_": "glimpse.models.captioning.ShowTell", **SMALL},
    "show_attend_tell": {
        "_target_": "glimpse.models.captioning.ShowAttendTell",
        "attention_dim": 8,
        **SMALL,
    },
}


def _captioner(decoder: str = "show_attend_tell", **options) -> Captioner:
    spec = DataSpec(
        kind=CAPTIONED_IMAGES,
        vocab=(*SPECIALS, *WORDS),
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        metadata={"max_caption_words": 6},
    )
    settings = {
        "encoder": ENCODER,
        "decoder": DECODERS[decoder],
        "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
        "scheduler": {"warmup_steps": 1, "min_lr_ratio": 0.1},
        "pretrained": None,
        **options,
    }
    return Captioner(spec.to_dict(), **settings)


def _batch(num_images: int = 2, seed: int = 0) -> CaptionedImages:
    """Two captions of the first image, one of each other, of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    captions = torch.tensor([[1, 4, 5, 7, 2, 0, 0], [1, 4, 6, 8, 9, 10, 2], [1, 5, 2, 0, 0, 0, 0]])[
        : num_images + 1
    ]
    return CaptionedImages(
        images=torch.randn(num_images, 3, 32, 32, generator=generator),
        captions=captions,
        lengths=(captions != 0).sum(dim=1),
        caption_image=torch.tensor([0, 0, 1])[: num_images + 1],
        references=(("a red circle", "a blue square on the"), ("red",))[:num_images],
        names=("a.jpg", "b.jpg")[:num_images],
    )


def test_cross_entropy_averages_over_real_tokens_and_ignores_padded_steps():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6)
    targets = torch.tensor([[3, 4, 2, 0], [5, 2, 0, 0]])
    loss = caption_cross_entropy(logits, targets, pad_id=0)
    real = [(r, t) for r in range(2) for t in range(4) if targets[r, t] != 0]
    by_hand = -sum(logits[r, t].log_softmax(-1)[targets[r, t]] for r, t in real) / len(real)
    torch.testing.assert_close(loss, by_hand)
    scrambled = logits.clone()
    scrambled[targets == 0] = torch.randn_like(scrambled[targets == 0]) * 100
    torch.testing.assert_close(caption_cross_entropy(scrambled, targets, pad_id=0), loss)


def test_loss_adds_lambda_times_the_attention_penalty_over_real_steps_only():
    task = _captioner(attention_regularization=0.3).eval()
    batch = _batch()
    grid = task.encode(batch.images)
    cross_entropy, regulariser = task.caption_loss(grid, batch)
    output = task.decoder(grid[batch.caption_image], batch.captions[:, :-1])
    targets = batch.captions[:, 1:]
    torch.testing.assert_close(
        cross_entropy, caption_cross_entropy(output.logits, targets, pad_id=0)
    )
    penalty = doubly_stochastic_penalty(output.attention, targets != 0).mean()
    torch.testing.assert_close(regulariser, 0.3 * penalty)
    assert regulariser > 0
    _, without = _captioner("show_tell").caption_loss(grid, batch)
    assert without == 0


def test_a_frozen_encoder_gets_no_gradients_and_keeps_its_batchnorm_statistics():
    task = _captioner().train()
    assert not task.encoder.training and task.decoder.training
    before = {k: v.clone() for k, v in task.encoder.state_dict().items()}
    loss = sum(task.caption_loss(task.encode(_batch().images), _batch()))
    loss.backward()
    assert all(p.grad is None for p in task.encoder.parameters())
    assert all(p.grad is not None for p in task.decoder.parameters())
    for key, value in task.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert task.feature_encoder() is not None


def test_fine_tuning_puts_the_encoder_in_its_own_learning_rate_group():
    frozen = _captioner()
    tuned = _captioner(fine_tune_encoder_from_epoch=0, encoder_lr=1e-5)
    assert tuned.encoder.training and tuned.feature_encoder() is None
    for task, rates in ((frozen, {1e-3}), (tuned, {1e-3, 1e-5})):
        task.trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False)
        optimizer = task.configure_optimizers()["optimizer"]
        assert {group["lr"] for group in optimizer.param_groups} == rates
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        encoder_params = {id(p) for p in task.encoder.parameters()}
        assert (encoder_params <= in_optimizer) == (task is tuned)


class _EncoderWatch(L.Callback):
    """Records, at each training epoch's first batch, whether the encoder trains."""

    def __init__(self) -> None:
        self.trainable: list[bool] = []
        self.weights: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            encoder = pl_module.encoder
            self.trainable.append(encoder.training and encoder.conv1.weight.requires_grad)
            self.weights.append(encoder.conv1.weight.detach().clone())


def test_the_encoder_is_fine_tuned_from_the_configured_epoch(tmp_path):
    watch = _EncoderWatch()
    cfg = compose_train(
        [
            *tiny_caption_overrides(tmp_path),
            "model.fine_tune_encoder_from_epoch=2",
        ],
        tmp_path / "run",
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg.model, datamodule.spec.to_dict())
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[watch],
    )
    trainer.fit(task, datamodule=datamodule)
    assert watch.trainable == [False, False, True]
    torch.testing.assert_close(watch.weights[0], watch.weights[2])
    assert not torch.equal(watch.weights[2], task.encoder.conv1.weight.detach())


@pytest.mark.parametrize("decoder", ["show_tell", "show_attend_tell"])
def test_caption_returns_words_and_an_attention_map_per_word(decoder):
    torch.manual_seed(0)
    task = _captioner(decoder, decoding={"beam_size": 2})
    captions = task.caption(_batch().images)
    assert len(captions) == 2 and task.training
    for generated in captions:
        assert all(word in WORDS or word == "<unk>" for word in generated.words)
        assert len(generated.words) <= 6 + 5  # the longest training caption and a margin
        assert math.isfinite(generated.score)
        if decoder == "show_attend_tell":
            assert generated.attention.shape == (len(generated.words), 1, 1)
        else:
            assert generated.attention is None


def test_validation_scores_free_decoding_against_every_reference():
    """The logged BLEU and CIDEr are those of the decoded captions against all references."""
    from torchmetrics.functional.text import bleu_score

    from glimpse.metrics.cider import cider_d

    torch.manual_seed(0)
    task = _captioner(decoding={"beam_size": 1})
    batch = _batch()
    task.eval()
    with torch.no_grad():
        task.val_metrics.update(
            task._decoded_text(task.decode(task.encode(batch.images))),
            [sorted(refs, key=lambda r: len(r.split())) for refs in batch.references],
        )
        generated = [" ".join(c.words) for c in task.caption(batch.images, beam_size=1)]
    scores = task.val_metrics.compute()
    refs = [list(r) for r in batch.references]
    torch.testing.assert_close(scores["val/bleu1"], bleu_score(generated, refs, n_gram=1))
    assert scores["val/cider"].item() == pytest.approx(cider_d(generated, refs)[0], abs=1e-6)


@pytest.mark.parametrize("model", ["show_tell", "show_attend_tell"])
def test_fast_dev_run_on_shapes_captions_returns_bleu4(tmp_path, model):
    cfg = compose_train([*tiny_caption_overrides(tmp_path, model), "debug=fdr"], tmp_path / "run")
    assert cfg.optimized_metric == "val/bleu4" and cfg.optimized_mode == "max"
    assert 0.0 <= train(cfg) <= 1.0


def test_a_run_keeps_the_best_bleu4_checkpoint_and_writes_caption_figures(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_train([*tiny_caption_overrides(tmp_path), *short_run(4, 2)], run_dir)
    train(cfg)
    best = list((run_dir / "checkpoints").glob("best_step*.ckpt"))
    assert len(best) == 1
    checkpoint = torch.load(best[0], map_location="cpu", weights_only=True)
    callback = next(v for k, v in checkpoint["callbacks"].items() if "ModelCheckpoint" in k)
    assert callback["monitor"] == "val/bleu4"
    figures = {path.name for path in (run_dir / "figures").iterdir()}
    assert "captions_step0000004.png" in figures and "attention_step0000004_0.png" in figures
    task, _ = load_task(best[0])
    assert task.tokenizer.words[: len(SPECIALS)] == SPECIALS


def test_cached_features_train_a_frozen_encoder_run_and_are_reused(tmp_path):
    overrides = [
        *tiny_caption_overrides(tmp_path),
        "model.fine_tune_encoder_from_epoch=null",
        "data.cache_features=true",
        *short_run(2),
    ]
    assert math.isfinite(train(compose_train(overrides, tmp_path / "run")))
    cached = sorted(p.name for p in (tmp_path / "data" / "feature_cache").glob("*/*.pt"))
    assert cached == ["test.pt", "train.pt", "val.pt"]


def test_cached_features_with_a_trained_encoder_fail_with_a_clear_error(tmp_path):
    overrides = [*tiny_caption_overrides(tmp_path), "data.cache_features=true", *short_run(2)]
    with pytest.raises(ValueError, match="cache_features"):
        train(compose_train(overrides, tmp_path / "run"))


def test_a_captioner_on_labelled_images_names_the_caption_data_configs(tmp_path):
    caption_data = ("data", "data.num_images")
    overrides = [
        *(o for o in tiny_caption_overrides(tmp_path) if not o.startswith(caption_data)),
        "data=shapes",
        "debug=fdr",
    ]
    with pytest.raises(IncompatibleConfigError, match="data=coco_captions, data=flickr8k"):
        train(compose_train(overrides, tmp_path / "run"))


def test_pretrained_torchvision_weights_reach_the_encoder_when_fitting_starts(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    state = get_model("resnet18", weights=None).state_dict()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / Path(get_model_weights("resnet18").DEFAULT.url).name)
    task = _captioner(pretrained="torchvision")
    assert not torch.equal(task.encoder.conv1.weight, state["conv1.weight"])
    task.setup("fit")
    torch.testing.assert_close(
        task.encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"]
    )


@pytest.mark.slow
def test_eval_captions_an_image_from_the_checkpoint_alone_and_reports_test_bleu(tmp_path):
    trained = run_script(
        "train.py", *tiny_caption_overrides(tmp_path), *short_run(2), "test=false", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")
    image = tmp_path / "photo.jpg"
    (source,) = (tmp_path / "data").glob("shapes_captions_*/Flicker8k_Dataset/000001.jpg")
    image.write_bytes(source.read_bytes())

    tested = run_script("eval.py", f"ckpt_path={checkpoint}", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/bleu4" in tested.stderr and "test/cider" in tested.stderr  # the metrics table

    for folder in (tmp_path / "data").iterdir():
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    captioned = run_script(
        "eval.py", f"ckpt_path={checkpoint}", f"image={image}", "beam_size=2", cwd=tmp_path
    )
    assert captioned.returncode == 0, captioned.stderr[-3000:]
    assert f"{image}: " in captioned.stdout
    (figure,) = tmp_path.glob("logs/eval/runs/*/figures/photo_attention.png")
    assert figure.stat().st_size > 0


def test_set_decoding_changes_the_beam_and_penalty_and_refuses_an_empty_beam():
    task = _captioner(decoding={"beam_size": 3, "length_penalty": 0.0})
    task.set_decoding(beam_size=1)
    assert task.hparams["decoding"] == {"beam_size": 1, "length_penalty": 0.0, "max_length": None}
    task.set_decoding(length_penalty=0.7)
    assert task.hparams["decoding"]["length_penalty"] == 0.7
    with pytest.raises(ValueError, match="beam size must be at least 1"):
        task.set_decoding(beam_size=0)
