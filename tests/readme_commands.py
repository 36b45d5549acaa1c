"""The commands that README.md and docs/*.md show, and how the README test runs each one.

A command is a line of a code block (indented by four spaces or fenced) that starts with
``python train.py``, ``python eval.py`` or ``python compare.py``; a trailing ``\\`` continues it on
the next line and a trailing ``# comment`` is not part of it. A comment that says ``GPU`` marks a
command that needs a GPU (or hours of CPU): the test only composes it (``--cfg job``).

The test runs every other command as written, from one copy of the repository root (as a user
runs them one after another in a checkout), adding only:

* step limits (``trainer.max_steps=1`` and one batch of each evaluation; two trials of an
  Optuna search);
* ``data.root=`` (or the data config's own key) pointing at the sample of the dataset in
  ``../shared/data``, for the data configs that have one there.

Placeholders are filled in: ``PATH`` (and ``logs/train/runs/<run>/checkpoints/last.ckpt``) with
the checkpoint of the latest training command above it on the same page, ``photo.jpg``,
``street.jpg``, ``a.jpg``, ``b.png`` with pictures, ``my.txt`` with a text, ``pairs.csv`` with an
image-caption file, ``DIR`` with a folder of class folders.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SCRIPTS = ("train.py", "eval.py", "compare.py")
COMMAND = re.compile(r"^python (?:{})\b".format("|".join(map(re.escape, SCRIPTS))))
GPU_OVERRIDES = re.compile(r"trainer=(gpu|ddp|fsdp)\b|hydra/launcher=")

#: Data configs with a sample in ../shared/data: (the key a user sets, the sample's path).
SHARED_SAMPLES = {
    "shakespeare": ("data.root", "tinyshakespeare"),
    "imagenette": ("data.root", "imagenette2_sample"),
    "ssl_imagenette": ("data.base.root", "imagenette2_sample"),
    "flickr8k": ("data.root", "flickr8k"),
    "flickr8k_pairs": ("data.path", "flickr8k"),
    "coco": ("data.root", "coco_mini"),
    "coco_captions": ("data.root", "coco_mini"),
    "coco_pairs": ("data.path", "coco_mini"),
    "text_pairs": ("data.path", "tatoeba_eng_fra/eng-fra.txt"),
}
#: One training step and one batch of each evaluation; when the command's own schedule would
#: validate falls after that step, training still ends with last.ckpt, which PATH names.
TRAIN_LIMITS = (
    "trainer.max_steps=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
)
EVAL_LIMITS = ("trainer.limit_test_batches=1",)
SEARCH_LIMITS = ("hydra.sweeper.n_trials=2",)


@dataclass
class Command:
    """One command of a page: its words as a user types them and how the test runs it."""

    page: str
    line: int
    text: str
    gpu: bool
    words: list[str] = field(default_factory=list)

    @property
    def script(self) -> str:
        return self.words[1]

    @property
    def trains(self) -> bool:
        return self.script == "train.py"

    def override(self, key: str) -> str | None:
        """The value this command gives ``key`` (``data`` -> ``shakespeare``), or None."""
        for word in self.words[2:]:
            name, _, value = word.lstrip("+").partition("=")
            if name == key:
                return value
        return None

    def __str__(self) -> str:
        return self.text


def commands_of(path: Path) -> list[Command]:
    """The commands shown in the code blocks of the Markdown file ``path``, in order."""
    found: list[Command] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        if raw.strip().startswith("```"):
            fenced = not fenced
            continue
        in_code = fenced or raw.startswith("    ")
        text = raw.strip()
        if pending is not None:
            start, joined = pending
            joined = f"{joined} {text}"
            if joined.endswith("\\"):
                pending = (start, joined[:-1].rstrip())
                continue
            found.append(_command(path, start, joined))
            pending = None
            continue
        if not in_code or not COMMAND.match(text):
            continue
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        found.append(_command(path, number, text))
    return found


def _command(path: Path, line: int, text: str) -> Command:
    words = shlex.split(text, comments=True)
    starts = [m.start() for m in re.finditer(r"\s#", text)]
    comment = next((text[i:] for i in starts if _split(text[:i]) == words), "")
    gpu = "GPU" in comment or bool(GPU_OVERRIDES.search(" ".join(words)))
    return Command(path.name, line, text, gpu, words)


def _split(text: str) -> list[str] | None:
    try:
        return shlex.split(text)
    except ValueError:
        return None


def limits_for(command: Command) -> list[str]:
    """The step limits appended to ``command``."""
    if command.script == "eval.py":
        return list(EVAL_LIMITS)
    if command.script != "train.py":
        return []
    added = list(TRAIN_LIMITS)
    if command.override("trainer.val_check_interval") is not None or command.override(
        "hparams_search"
    ):
        # The command validates every N steps (or searches on a val metric): after the one step
        # here, so its val metrics exist.
        added.append("trainer.val_check_interval=1")
    if command.override("hparams_search"):
        added += SEARCH_LIMITS
    return added


def data_choice(command: Command, conf: Path) -> str | None:
    """The data config ``command`` trains on: its ``data=``, or its experiment's."""
    data = command.override("data")
    experiment = command.override("experiment")
    if data is None and experiment is not None:
        recipe = yaml.safe_load((conf / "experiment" / f"{experiment}.yaml").read_text())
        for entry in recipe.get("defaults", []):
            if isinstance(entry, dict) and "override /data" in entry:
                data = entry["override /data"]
    return data


def shared_data_for(command: Command, shared: Path, conf: Path) -> list[str]:
    """``data.root=`` (or the config's key) for a data config whose sample is in ``shared``,
    unless the command sets that key itself."""
    data = data_choice(command, conf)
    if data is None or not shared.is_dir():
        return []
    added = []
    for choice in data.split(","):
        if choice in SHARED_SAMPLES:
            key, sample = SHARED_SAMPLES[choice]
            if command.override(key) is None and (shared / sample).exists():
                added.append(f"{key}={shared / sample}")
    return sorted(set(added))[:1]
