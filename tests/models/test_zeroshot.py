"""Zero-shot classifier weights from class names x prompt templates."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train
from open_clip.zero_shot_classifier import build_zero_shot_classifier_legacy
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch.nn import functional as F

from glimpse.data.synthetic.shapes import COLOURS
from glimpse.models.zeroshot import check_templates, resolve_templates, zero_shot_classifier

CLASSES = ["circle", "square", "triangle", "star", "cross"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a background"]


class PromptTable:
    """A text 'encoder' that looks every prompt up in a random table: tokenize gives each
    distinct prompt an id ``(N, 1)``, encode_text returns its row ``(N, E)``."""

    def __init__(self, dim: int = 12, seed: int = 0) -> None:
        prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
        self.ids = {prompt: i for i, prompt in enumerate(prompts)}
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(len(prompts), dim, generator=generator) * 3
        self.calls = 0

    def tokenize(self, texts):
        return torch.tensor([[self.ids[text]] for text in texts])

    def encode_text(self, tokens, normalize=False):
        self.calls += 1
        return self.table[tokens[:, 0]]


def test_weights_are_renormalised_means_of_normalised_prompt_embeddings():
    prompts = PromptTable()
    weights = zero_shot_classifier(prompts.encode_text, prompts.tokenize, CLASSES, TEMPLATES)
    assert weights.shape == (12, len(CLASSES))
    torch.testing.assert_close(weights.norm(dim=0), torch.ones(len(CLASSES)))
    for c, name in enumerate(CLASSES):
        rows = [prompts.ids[t.format(name)] for t in TEMPLATES]
        mean = F.normalize(prompts.table[rows], dim=-1).mean(dim=0)
        torch.testing.assert_close(weights[:, c], mean / mean.norm())


def test_weights_equal_open_clips_classifier():
    prompts = PromptTable(seed=3)
    ours = zero_shot_classifier(prompts.encode_text, prompts.tokenize, CLASSES, TEMPLATES)
    theirs = build_zero_shot_classifier_legacy(prompts, prompts.tokenize, CLASSES, TEMPLATES)
    torch.testing.assert_close(ours, theirs)


def test_class_batching_changes_nothing_but_the_number_of_encoder_calls():
    prompts = PromptTable()
    together = zero_shot_classifier(prompts.encode_text, prompts.tokenize, CLASSES, TEMPLATES)
    assert prompts.calls == 1
    apart = zero_shot_classifier(
        prompts.encode_text, prompts.tokenize, CLASSES, TEMPLATES, classes_per_batch=2
    )
    assert prompts.calls == 1 + 3
    torch.testing.assert_close(together, apart)


def test_one_template_gives_the_normalised_prompt_embedding():
    prompts = PromptTable()
    weights = zero_shot_classifier(prompts.encode_text, prompts.tokenize, CLASSES, TEMPLATES[:1])
    rows = [prompts.ids[TEMPLATES[0].format(name)] for name in CLASSES]
    torch.testing.assert_close(weights, F.normalize(prompts.table[rows], dim=-1).T)


def test_template_sets_are_looked_up_by_name_or_given_as_a_list():
    sets = {"simple": ["a photo of a {}."], "two": ["{}", "a {}"]}
    assert resolve_templates("two", sets) == ["{}", "a {}"]
    assert resolve_templates(["an image of a {}"], sets) == ["an image of a {}"]
    with pytest.raises(ValueError, match="'nope' is not known; use one of simple, two"):
        resolve_templates("nope", sets)


@pytest.mark.parametrize("templates", [[], ["no placeholder"], ["{} and {}"]])
def test_bad_templates_are_refused(templates):
    with pytest.raises(ValueError, match="template"):
        check_templates(templates)


def test_shipped_template_sets_are_openais_imagenet_prompts_and_the_shape_colours(tmp_path):
    sets = compose_train(["model=clip"], tmp_path).model.zeroshot.template_sets
    assert sets.imagenet == [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert len(sets.imagenet) == 80 and sets.simple == ["a photo of a {}."]
    colours = [template.split()[1] for template in sets.shapes]
    assert colours == list(COLOURS)
    for template in check_templates(sets.shapes):
        assert template.startswith("an " if template.split()[1][0] in "aeiou" else "a ")
