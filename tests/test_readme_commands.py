"""The README is an executable specification: every ``python train.py``, ``python eval.py`` and
``python compare.py`` command that README.md and docs/*.md show runs from a copy of the
repository root exactly as written, with only step limits appended and ``data.root=`` pointing
at ``../shared/data`` for the datasets that have a sample there (see :mod:`readme_commands`).

Each must exit 0, or, where it needs the network (weights or a dataset that cannot be
downloaded here), exit 1 with one sentence and no traceback. Commands marked GPU are composed
(``--cfg job``), not run. The list of commands and what each did is printed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF, REPO, SHARED_DATA, copy_repository_root
from PIL import Image
from readme_commands import Command, commands_of, limits_for, shared_data_for

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = [command for page in PAGES for command in commands_of(page)]
DRIVER = Path(__file__).with_name("readme_driver.py")
#: Pages run in this many processes at once, one per core of the test machines.
DRIVERS = 2
#: Every download fails at once here, as on a machine without internet access.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _id(command: Command) -> str:
    return f"{command.page}:{command.line}"


def _write_inputs(root: Path) -> None:
    """The files the placeholders name, in the checkout's root."""
    from glimpse.data.synthetic.shapes import write_imagefolder, write_pairs

    folder = write_imagefolder(root / "DIR", 3, 48, seed=5, splits={"train": 0.5, "val": 0.5})
    pictures = sorted(folder.rglob("*.png"))
    for name, source in zip(("photo.jpg", "street.jpg", "a.jpg"), pictures, strict=False):
        Image.open(source).convert("RGB").save(root / name)
    Image.open(pictures[-1]).save(root / "b.png")
    pairs = write_pairs(root / "pairs_source", 24, 48, seed=5)
    shutil.copytree(pairs / "images", root / "images")
    shutil.copy2(pairs / "pairs.csv", root / "pairs.csv")
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(words, 6)) for _ in range(2000))
    (root / "my.txt").write_text(text + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """Every command run in page order in one copy of the repository root, the pages shared
    out between :data:`DRIVERS` processes."""
    root = copy_repository_root(tmp_path_factory.mktemp("checkout"))
    _write_inputs(root)
    plan = [
        {
            "id": _id(command),
            "page": command.page,
            "words": [
                *command.words,
                *shared_data_for(command, SHARED_DATA, CONF),
                *([] if command.gpu else limits_for(command)),
            ],
            "compose_only": command.gpu,
        }
        for command in COMMANDS
    ]
    env = {**os.environ, **OFFLINE, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    drivers = []
    for index, part in enumerate(_by_page_in_parts(plan, DRIVERS)):
        (root / f"plan{index}.json").write_text(json.dumps(part))
        drivers.append(
            subprocess.Popen(
                [sys.executable, str(DRIVER), f"plan{index}.json", f"results{index}.json"],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        )
    for driver in drivers:
        driver.wait(timeout=2400)
    ran = [
        result
        for index in range(len(drivers))
        if (root / f"results{index}.json").is_file()
        for result in json.loads((root / f"results{index}.json").read_text())
    ]
    return {result["id"]: result for result in ran}


def _by_page_in_parts(plan: list[dict], parts: int) -> list[list[dict]]:
    """``plan`` cut into ``parts`` lists of whole pages, in page order within each, of about
    the same number of commands (a page's commands depend on each other's checkpoints)."""
    pages: dict[str, list[dict]] = {}
    for item in plan:
        pages.setdefault(item["page"], []).append(item)
    lists: list[list[dict]] = [[] for _ in range(parts)]
    for items in sorted(pages.values(), key=len, reverse=True):
        min(lists, key=len).extend(items)
    return [part for part in lists if part]


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_the_command_runs_as_written(results, command):
    result = results.get(_id(command))
    assert result is not None, f"{command} did not run (the driver stopped before it)"
    if result["returncode"] == 0:
        return
    stderr = result["stderr"]
    message = " ".join(stderr.split())
    assert "Traceback" not in stderr, f"{command}\n{stderr[-4000:]}"
    assert result["returncode"] == 1, f"{command}\n{stderr[-4000:]}"
    assert "error:" in message and "download" in message.lower(), (
        f"{command} failed without needing the network:\n{stderr[-4000:]}"
    )


def test_the_readme_and_docs_show_commands_of_every_kind(results, capsys):
    """The list of commands and their outcome, printed; the pages show each script."""
    lines = []
    for command in COMMANDS:
        result = results.get(_id(command), {})
        stderr = result.get("stderr", "")
        outcome = "ok" if result.get("returncode") == 0 else "failed"
        if outcome == "failed" and "Traceback" not in stderr and "download" in stderr.lower():
            outcome = "needs the network (1 line)"
        if command.gpu:
            outcome = "composed (GPU)" if result.get("returncode") == 0 else "does not compose"
        lines.append(f"{_id(command):28} {result.get('seconds', '-'):>6}s  {outcome:22} {command}")
    with capsys.disabled():
        print("\nREADME and docs commands:\n" + "\n".join(lines))
    scripts = {command.script for command in COMMANDS}
    assert {"train.py", "eval.py"} <= scripts
    assert any(command.gpu for command in COMMANDS) and any(not c.gpu for c in COMMANDS)
