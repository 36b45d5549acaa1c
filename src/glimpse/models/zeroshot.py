"""Zero-shot classification with CLIP: class weights from prompts of class names.

Radford et al. (2021), sec. 3.1.4 and fig. 1 (2)-(3): each class name is put into prompt
templates ("a photo of a {}."), the text encoder embeds every prompt, and the class's weight is
the mean of its prompts' L2-normalised embeddings, normalised again (prompt ensembling, as in
OpenAI's ImageNet notebook and open_clip's ``build_zero_shot_classifier``). An image is then
classified by the cosine similarity of its normalised embedding to each class's weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

#: The placeholder a template's class name goes into.
PLACEHOLDER = "{}"


def check_templates(templates: Sequence[str]) -> list[str]:
    """The templates as a list, after checking there is at least one and that each holds the
    class-name placeholder ``{}`` exactly once."""
    if isinstance(templates, str) or not templates:
        raise ValueError(
            f"Zero-shot templates must be a non-empty list of strings, not {templates!r}."
        )
    for template in templates:
        if str(template).count(PLACEHOLDER) != 1:
            raise ValueError(
                f"The zero-shot template {template!r} must hold the class name's place {{}} "
                "exactly once, e.g. 'a photo of a {}.'."
            )
    return [str(t) for t in templates]


def resolve_templates(
    templates: str | Sequence[str], template_sets: Mapping[str, Sequence[str]]
) -> list[str]:
    """The prompt templates named by ``templates``: the name of one of ``template_sets``
    (``simple``, ``imagenet``, ``shapes``, ...) or a list of templates itself."""
    if isinstance(templates, str):
        if templates not in template_sets:
            raise ValueError(
                f"The template set {templates!r} is not known; use one of "
                f"{', '.join(sorted(template_sets))} or a list of templates such as "
                "['a photo of a {}.']."
            )
        templates = template_sets[templates]
    return check_templates(templates)


@torch.no_grad()
def zero_shot_classifier(
    encode_text: Callable[[Tensor], Tensor],
    tokenize: Callable[[list[str]], Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    classes_per_batch: int = 16,
) -> Tensor:
    """The zero-shot classifier's weights ``(E, C)``, one L2-normalised column per class.

    Args:
        encode_text: token ids ``(N, L)`` -> text embeddings ``(N, E)`` (normalised or not).
        tokenize: ``N`` strings -> token ids ``(N, L)``.
        class_names: the ``C`` names put into the templates.
        templates: prompt templates with a ``{}`` for the class name.
        classes_per_batch: classes whose prompts are encoded together (bounds memory).

    Returns:
        ``W (E, C)``: column ``c`` is the mean over templates of the normalised embeddings of
        the prompts of class ``c``, normalised again; ``normalised image embeddings (B, E) @ W``
        gives the cosine similarity of every image to every class.
    """
    templates = check_templates(templates)
    if not class_names:
        raise ValueError("A zero-shot classifier needs at least one class name.")
    columns = []
    for start in range(0, len(class_names), classes_per_batch):
        names = list(class_names[start : start + classes_per_batch])
        prompts = [template.format(name) for name in names for template in templates]
        embeddings = F.normalize(encode_text(tokenize(prompts)).float(), dim=-1)
        means = embeddings.reshape(len(names), len(templates), -1).mean(dim=1)
        columns.append(F.normalize(means, dim=-1))
    return torch.cat(columns).T
